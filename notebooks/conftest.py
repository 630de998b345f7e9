"""pytest settings for `pytest --nbmake notebooks` (make test runs it with pytest-xdist, two notebooks at a time).

Chapter 3's notebooks share their measured rows (ftkit.overfit keeps each trained remedy under outputs/overfit): 3.5's
scoreboard reads the rows 3.1-3.4 measured. Run side by side, 3.5 would start before they exist and train them all
again. So under xdist the chapter is one unit of work, run by one worker in order (and first, being the largest);
every other notebook is a unit of its own. Alone, each notebook still runs: it trains the rows it does not find.
(xdist's own `--dist loadgroup` marks do not group under pytest 9: it renames node ids the way pytest 8 stored them.)
"""

SHARED_ROWS = "/03_overfitting/"  # a part of the node ids of chapter 3


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ChapterThreeTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SHARED_ROWS if SHARED_ROWS in nodeid else nodeid

    return ChapterThreeTogether(config, log)
