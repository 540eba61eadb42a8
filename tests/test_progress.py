"""Progress in a log: plain lines every N seconds, no bar frames (carriage returns)."""
from engine.progress import Progress


def test_log_gets_plain_periodic_lines(capsys):
    progress = Progress(5, "epoch 1/2", every_s=0.0, terminal=False)
    for step in range(5):
        if progress.update(1):
            progress.show(loss="0.500")
    progress.close()
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert "\r" not in captured.out + captured.err and captured.err == ""
    assert len(lines) == 4  # every step but the last (the epoch's own line follows it)
    assert lines[0].startswith("epoch 1/2  1/5 step  loss 0.500  ") and " step/s  eta " in lines[0]


def test_log_lines_wait_for_the_period_and_disabled_prints_nothing(capsys):
    quiet = Progress(100, "caching", "img", every_s=3600.0, terminal=False)
    assert not any(quiet.update(1) for _ in range(99))
    off = Progress(100, "x", enabled=False, every_s=0.0, terminal=False)
    assert not any(off.update(1) for _ in range(99))
    assert capsys.readouterr().out == ""
