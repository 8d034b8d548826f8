"""harness.ladder: the SVG is well-formed, has one arrow per packet of the connection in the
right direction, and marks each packet's verdict (✓ green, ✗ red, · grey)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.judge.dissect import ACK, PSH
from harness.report.ladder import GREEN, GREY, LEFT_X, RED, RIGHT_X, ladder_svg, write_ladder
from harness.judge.match import match
from harness.judge.scenario import parse_scenario
from tests.unit.test_match_run import HS, handshake, pkt

NS = "{http://www.w3.org/2000/svg}"


def _svg(packets, body=""):
    sc = parse_scenario("responder: --app echo\n" + HS + body, "t.scn")
    v = match(sc, packets)
    return v, ET.fromstring(ladder_svg(packets, v, "t.scn — a title & <escapes>"))


def arrows(root):
    return [l for l in root.iter(NS + "line") if l.get("marker-end")]


def test_one_arrow_per_packet_in_its_direction():
    v, root = _svg(handshake())
    assert v.ok
    a = arrows(root)
    assert len(a) == 3
    assert (a[0].get("x1"), a[0].get("x2")) == (str(LEFT_X), str(RIGHT_X))     # c>s
    assert (a[1].get("x1"), a[1].get("x2")) == (str(RIGHT_X), str(LEFT_X))     # s>c
    texts = [t.text for t in root.iter(NS + "text")]
    assert "t.scn — a title & <escapes>" in texts
    assert any(t and t.startswith("PASS") for t in texts)
    assert any(t == "[S.] seq 0, ack 1, win 512" for t in texts)


def test_verdict_marks():
    ps = handshake() + [pkt(4, 0.01, True, PSH | ACK, 1, 1, b"x"),       # fails its line
                        pkt(5, 0.02, False, ACK, 1, 2)]                  # an extra client ACK
    v, root = _svg(ps, 's>c [P.] seq 1:2, ack 1, payload "y"\n')
    assert not v.ok
    marks = {t.text[0]: t.get("fill") for t in root.iter(NS + "text")
             if t.text and t.text[:1] in "✓✗·"}
    assert marks == {"✓": GREEN, "✗": RED, "·": GREY}
    bad = [l for l in arrows(root) if l.get("stroke") == RED]
    assert len(bad) == 1


def test_empty_capture_and_file(tmp_path):
    v, root = _svg([])
    assert not arrows(root)
    assert any("no packets" in (t.text or "") for t in root.iter(NS + "text"))
    path = write_ladder(tmp_path / "ladder.svg", handshake(), v)
    ET.parse(path)
