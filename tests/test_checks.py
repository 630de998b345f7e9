from ftkit.core.checks import check_choice, check_number


def test_check_number_accepts_right_and_explains_wrong(capsys):
    assert check_number(1.24, 1.2345, rel=0.01, name="share")
    assert not check_number(0.01235, 1.2345, rel=0.01, name="share", mistakes={0.012345: "you forgot the ×100"})
    assert "you forgot the ×100" in capsys.readouterr().out
    assert not check_number(2.5, 1.2345, rel=0.01)
    assert "too high" in capsys.readouterr().out


def test_check_number_unanswered_and_not_a_number(capsys):
    assert not check_number(None, 1.0, hint="Look at the table.")
    assert "not answered yet" in capsys.readouterr().out
    assert not check_number("lots", 1.0)
    assert "expected a number" in capsys.readouterr().out


def test_check_choice(capsys):
    assert check_choice("qlora", "qlora", options=("full", "lora", "qlora"))
    assert not check_choice("full", "qlora", options=("full", "lora", "qlora"), why={"full": "It needs 16 bytes/param."})
    assert "16 bytes/param" in capsys.readouterr().out
    assert not check_choice("adapter", "qlora", options=("full", "lora", "qlora"))
