"""Issue 16: `grafient budgets ...` and `grafient alerts ...`: one line on bad input, non-zero
exit, secrets never printed; `alerts test` says what happened over real HTTP."""

from __future__ import annotations

import io
import json

import pytest

from grafient_pipeline import cli
from tests.test_alert_channels import Capture, capture  # noqa: F401 (fixture)

SLACK_URL_PATH = "/services/T0AAA/B0BBB/PrivatePath0123456789"


def grafient(monkeypatch, capsys, *args: str, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_budgets_add_list_remove(settings, monkeypatch, capsys):
    code, out, _ = grafient(monkeypatch, capsys, "budgets", "add", "Research", "--monthly",
                            "2500", "--model", "gpt-4o", "--thresholds", "50,90")  # fmt: skip
    assert code == 0 and "2,500.00 USD a month on model=gpt-4o" in out and "90%" in out
    code, out, _ = grafient(monkeypatch, capsys, "budgets", "list", "--json")
    assert json.loads(out) == [{"name": "Research", "monthly_usd": "2500", "thresholds": [50, 90],
                                "integration_id": None, "provider": None, "project_id": None,
                                "model": "gpt-4o"}]  # fmt: skip
    code, out, _ = grafient(monkeypatch, capsys, "budgets", "list")
    assert "Research" in out and "50,90" in out
    assert grafient(monkeypatch, capsys, "budgets", "remove", "research")[0] == 0
    assert "no budgets yet" in grafient(monkeypatch, capsys, "budgets", "list")[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("budgets", "add", "x", "--monthly", "lots"), "--monthly wants an amount"),
        (("budgets", "add", "x", "--monthly", "5", "--thresholds", "a"), "--thresholds wants"),
        (("budgets", "add", "x", "--monthly", "5", "--integration", "nope"), "no integration"),
        (("budgets", "remove", "ghost"), "no budget named"),
        (("alerts", "test", "ghost"), "no alert channel named"),
        (("alerts", "add-channel", "w", "--webhook-url", "ftp://x"), "not an http"),
        (("alerts", "add-channel", "w", "--webhook-url", "https://x.example"), "--secret-stdin"),
        (("alerts", "add-channel", "m", "--smtp", "mail:587", "--from", "a@b.co", "--to", "nope"),
         "--to needs email addresses"),
        (("alerts", "add-channel", "m", "--smtp", "mail", "--from", "a@b.co", "--to", "c@d.co"),
         "HOST:PORT"),
        (("alerts", "add-channel", "s", "--slack-webhook-stdin"), "nothing on standard input"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_non_zero(settings, monkeypatch, capsys, args, message):
    code, _out, err = grafient(monkeypatch, capsys, *args)
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_alerts_add_list_test_remove_never_show_the_secret(
    settings,
    monkeypatch,
    capsys,
    capture: Capture,  # noqa: F811
):
    url = capture.url.replace("http://", "https://") + SLACK_URL_PATH
    code, out, err = grafient(monkeypatch, capsys, "alerts", "add-channel", "ops",
                              "--slack-webhook-stdin", "--digest", stdin=url + "\n")  # fmt: skip
    assert code == 0 and "slack to 127.0.0.1" in out and "digest" in out
    hook = capture.url + "/hook"
    code, out, err = grafient(
        monkeypatch,
        capsys,
        "alerts",
        "add-channel",
        "hook",
        "--webhook-url",
        hook,
        "--secret-stdin",
        stdin="s3cret-value-xyz\n",
    )
    assert code == 0
    code, out, _ = grafient(monkeypatch, capsys, "alerts", "list", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["ops"]["digest"] and rows["hook"]["status"] == "active"

    code, out, err = grafient(monkeypatch, capsys, "alerts", "test", "hook")
    assert code == 0 and "hook: delivered (HTTP 200 from 127.0.0.1" in out
    assert capture.requests[-1][1]["X-Grafient-Alert-Key"].startswith("test:hook:")
    capture.script = [(404, {}, 0)]
    code, out, err = grafient(monkeypatch, capsys, "alerts", "test", "hook")
    assert code == 1 and "HTTP 404 from 127.0.0.1" in err
    code, out, _ = grafient(monkeypatch, capsys, "alerts", "list")
    assert "error" in out
    code, out, err = grafient(monkeypatch, capsys, "alerts", "test", "ops")  # https to http
    assert code == 1 and "PrivatePath" not in err
    everything = "".join(capsys.readouterr()) + out + err
    assert "PrivatePath" not in everything and "s3cret" not in everything
    assert grafient(monkeypatch, capsys, "alerts", "remove", "hook")[0] == 0
    code, out, _ = grafient(monkeypatch, capsys, "alerts", "list", "--json")
    assert [row["name"] for row in json.loads(out)] == ["ops"]
