"""Tools around the course: the doctor (is this machine ready?) and notebook hygiene (badges, install cells)."""
