"""harness.report: the transcript is tcpdump's own output, result.json holds the verdict line by
line, the summary marks every packet."""

from __future__ import annotations

import json
import shutil

import pytest

from harness.report import runfiles as report
from harness.judge.dissect import read_many
from harness.judge.match import match
from harness.report.runfiles import format_summary, write_run
from harness.judge.scenario import load_scenario
from responder import lecture
from tests.unit.test_dissect import lecture_frames, write_pcap


@pytest.fixture(scope="module")
def lecture_run(tmp_path_factory):
    """The lecture's capture and one with the client's checksums left to offload."""
    d = tmp_path_factory.mktemp("report")
    good = write_pcap(d / "capture.pcap", lecture_frames())
    frames = lecture_frames()
    ack = bytearray(lecture.ACK)
    ack[36:38] = b"\x00\x00"                   # as the host hands it to the NIC
    frames[2] = (frames[2][0], bytes(ack))
    offload = write_pcap(d / "offload.pcap", frames)
    pk_good, pk_offload = read_many([good, offload])
    return good, pk_good, offload, pk_offload


def test_write_run_transcript_is_tcpdumps(tmp_path, lecture_run):
    pcap, pkts, _, _ = lecture_run
    sc = load_scenario("classic")
    v = match(sc, pkts)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(pcap, run / "capture.pcapng")
    paths = write_run(run, sc, pkts, v, {"backend": "offline"})
    text = paths["transcript"].read_text()
    assert text.splitlines()[0] == ("# classic.scn: PASS — classic.scn: all 8 lines matched "
                                    "(8 packets of the connection)")
    # tcpdump's words, as in the notes
    assert ("192.168.56.100.80 > 192.168.56.1.62438: Flags [S.], cksum 0x1dd6 (correct), "
            "seq 2863315899, ack 255257675, win 65535") in text
    assert "0x0000:  4500 0040 5b30 4000 4006 edd1 c0a8 3864" in text
    assert "offload" not in text


def test_result_json(tmp_path, lecture_run):
    pcap, pkts, _, _ = lecture_run
    sc = load_scenario("classic")
    v = match(sc, pkts)
    write_run(tmp_path, sc, pkts, v, {"pcap": str(pcap), "backend": "offline"})
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["ok"] is True and data["verdict"] == "pass"
    assert data["scenario"]["responder"] == ["--app", "hello", "--classic"]
    assert [ln["packet"] for ln in data["lines"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert data["lines"][3]["text"].startswith("s>c [.]   seq 1:12")
    assert data["packets"][3]["payload"] == "Hello TCP\\n\\0"
    assert data["packets"][1]["direction"] == "s>c" and data["packets"][1]["seq_raw"] == lecture.ISN
    assert data["timings"]["packets"] == 8
    assert data["timings"]["synack_after_syn_s"] == pytest.approx(0.00041)
    assert data["run"] == {"pcap": str(pcap), "backend": "offline"}
    assert set(data["versions"]) >= {"python", "tshark", "tcpdump", "pyshark"}
    assert data["client"] == "192.168.56.1.62438" and data["server"] == "192.168.56.100.80"


def test_without_tcpdump_the_run_keeps_its_verdict(tmp_path, lecture_run, monkeypatch):
    pcap, pkts, _, _ = lecture_run
    monkeypatch.setattr(report.shutil, "which", lambda name: None)
    sc = load_scenario("classic")
    write_run(tmp_path, sc, pkts, match(sc, pkts), {"pcap": str(pcap)})
    assert "# no transcript: tcpdump is not installed" in (tmp_path / "transcript.txt").read_text()
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["ok"] and data["run"]["transcript_error"] == "tcpdump is not installed"


def test_offloaded_client_checksums_are_explained_not_failed(tmp_path, lecture_run):
    _, _, pcap, pkts = lecture_run
    sc = load_scenario("classic")
    v = match(sc, pkts)
    assert v.ok                                # client checksums are not the responder's
    write_run(tmp_path, sc, pkts, v, {"pcap": str(pcap)})
    text = (tmp_path / "transcript.txt").read_text()
    assert "checksum offload" in text and "(incorrect -> 0x7c4e)" in text


def test_summary_marks_every_packet(lecture_run):
    _, pkts, _, _ = lecture_run
    sc = load_scenario("classic")
    lines = format_summary(sc, pkts, match(sc, pkts)).splitlines()
    assert lines[0].startswith("classic.scn — The lecture's naive responder")
    assert len(lines) == 2 + 8 + 1
    assert lines[3] == ("✓   2   0.000410  s>c  Flags [S.], seq 0, ack 1, win 65535, options "
                        "[mss 1460,nop,wscale 5,nop,nop,TS val 387824164 ecr 0,sackOK,eol], "
                        "length 0   [classic.scn:14]")
    assert lines[-1] == "PASS classic.scn: all 8 lines matched (8 packets of the connection)"


def test_summary_of_a_failure(lecture_run):
    _, pkts, _, _ = lecture_run
    sc = load_scenario("hello")
    v = match(sc, pkts)
    lines = format_summary(sc, pkts, v, max_failures=3).splitlines()
    assert lines[3].startswith("✗   2   0.000410  s>c  Flags [S.]")
    assert lines[3].endswith("[✗ hello.scn:15]")
    assert lines[2 + 8].startswith("  ✗ hello.scn:15: packet 2 (server→client): expected options")
    assert lines[-2] == "  ... and 5 more (see result.json)"
    assert lines[-1].startswith("FAIL hello.scn:15: packet 2")
