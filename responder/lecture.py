"""The lecture's exchange as byte vectors: the full IPv4 packets of the ``tcpdump -vx`` dump in
the notes (shared/seed/000_2c1807f01ce56bcf.txt, "Naive TCP handshake responder").

nc on 192.168.56.1:62438 talks to the naive responder on 192.168.56.100:80 (ISN 0xaaaabbbb).
The hex below is copied line for line from the dump (offsets 0x0000, 0x0010, ... as printed),
so a reader can hold this file next to the notes.  ``EXPECTED`` is what tcpdump printed for
each packet, for tests that check the parser against tcpdump's reading.
"""

from __future__ import annotations


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


CLIENT = bytes((192, 168, 56, 1))
SERVER = bytes((192, 168, 56, 100))
CLIENT_PORT = 62438
SERVER_PORT = 80
ISN = 0xAAAABBBB
CLIENT_ISN = 255257674
LINES = (b"Hello TCP\n\0", b"Great to meet you!\n\0",
         b"Nice weather we are having, but they say it will rain on Monday.\n\0")

# 01:35:59.849805 192.168.56.1.62438 > 192.168.56.100.80: Flags [S]
SYN = _hex("""
    4500 0040 5b30 4000 4006 edd1 c0a8 3801
    c0a8 3864 f3e6 0050 0f36 ec4a 0000 0000
    b002 ffff 844d 0000 0204 05b4 0103 0305
    0101 080a 171d ba24 0000 0000 0402 0000
""")

# 01:35:59.850215 192.168.56.100.80 > 192.168.56.1.62438: Flags [S.] (the naive responder)
SYNACK = _hex("""
    4500 0040 5b30 4000 4006 edd1 c0a8 3864
    c0a8 3801 0050 f3e6 aaaa bbbb 0f36 ec4b
    b012 ffff 1dd6 0000 0204 05b4 0103 0305
    0101 080a 171d ba24 0000 0000 0402 0000
""")

# 01:35:59.850249 client > server: Flags [.], ack 1 -- completes the handshake
ACK = _hex("""
    4500 0034 5fef 4000 4006 e91e c0a8 3801
    c0a8 3864 f3e6 0050 0f36 ec4b aaaa bbbc
    8010 1015 7c4e 0000 0101 080a 171d ba24
    171d ba24
""")

# 01:35:59.850415 server > client: Flags [.], seq 1:12 "Hello TCP\n\0"
DATA1 = _hex("""
    4500 003f 5fef 4000 4006 e913 c0a8 3864
    c0a8 3801 0050 f3e6 aaaa bbbc 0f36 ec4b
    8010 1015 b403 0000 0101 080a 171d ba24
    171d ba24 4865 6c6c 6f20 5443 500a 00
""")

# 01:35:59.850494 server > client: Flags [.], seq 12:32 "Great to meet you!\n\0"
DATA2 = _hex("""
    4500 0048 5fef 4000 4006 e90a c0a8 3864
    c0a8 3801 0050 f3e6 aaaa bbc7 0f36 ec4b
    8010 1015 f447 0000 0101 080a 171d ba24
    171d ba24 4772 6561 7420 746f 206d 6565
    7420 796f 7521 0a00
""")

# 01:35:59.850520 client > server: Flags [.], ack 32 (delayed ACK, cumulative)
ACK32 = _hex("""
    4500 0034 ef4e 4000 4006 59bf c0a8 3801
    c0a8 3864 f3e6 0050 0f36 ec4b aaaa bbdb
    8010 1014 7c30 0000 0101 080a 171d ba24
    171d ba24
""")

# 01:35:59.850593 server > client: Flags [.], seq 32:98 "Nice weather ..."
DATA3 = _hex("""
    4500 0076 5fef 4000 4006 e8dc c0a8 3864
    c0a8 3801 0050 f3e6 aaaa bbdb 0f36 ec4b
    8010 1015 2375 0000 0101 080a 171d ba24
    171d ba24 4e69 6365 2077 6561 7468 6572
    2077 6520 6172 6520 6861 7669 6e67 2c20
    6275 7420 7468 6579 2073 6179 2069 7420
    7769 6c6c 2072 6169 6e20 6f6e 204d 6f6e
    6461 792e 0a00
""")

# 01:35:59.951239 client > server: Flags [.], ack 98
ACK98 = _hex("""
    4500 0034 596c 4000 4006 efa1 c0a8 3801
    c0a8 3864 f3e6 0050 0f36 ec4b aaaa bc1d
    8010 1012 7b8b 0000 0101 080a 171d ba89
    171d ba24
""")

# In capture order.
EXCHANGE = (SYN, SYNACK, ACK, DATA1, DATA2, ACK32, DATA3, ACK98)

_C2S = (CLIENT, SERVER, CLIENT_PORT, SERVER_PORT)
_S2C = (SERVER, CLIENT, SERVER_PORT, CLIENT_PORT)
_TS = (387824164, 387824164)

# What tcpdump printed, as absolute numbers: (src, dst, sport, dport), IP id, IP length,
# flags, seq, ack, window, TCP checksum, options (tcpdump's names), payload length.
EXPECTED = {
    "SYN": dict(addrs=_C2S, ident=23344, length=64, flags="S", seq=255257674, ack=0,
                window=65535, cksum=0x844D, mss=1460, wscale=5, sack_permitted=True,
                timestamps=(387824164, 0), payload_len=0),
    "SYNACK": dict(addrs=_S2C, ident=23344, length=64, flags="S.", seq=2863315899,
                   ack=255257675, window=65535, cksum=0x1DD6, mss=1460, wscale=5,
                   sack_permitted=True, timestamps=(387824164, 0), payload_len=0),
    "ACK": dict(addrs=_C2S, ident=24559, length=52, flags=".", seq=255257675,
                ack=ISN + 1, window=4117, cksum=0x7C4E, timestamps=_TS, payload_len=0),
    "DATA1": dict(addrs=_S2C, ident=24559, length=63, flags=".", seq=ISN + 1, ack=255257675,
                  window=4117, cksum=0xB403, timestamps=_TS, payload_len=11),
    "DATA2": dict(addrs=_S2C, ident=24559, length=72, flags=".", seq=ISN + 12, ack=255257675,
                  window=4117, cksum=0xF447, timestamps=_TS, payload_len=20),
    "ACK32": dict(addrs=_C2S, ident=61262, length=52, flags=".", seq=255257675,
                  ack=ISN + 32, window=4116, cksum=0x7C30, timestamps=_TS, payload_len=0),
    "DATA3": dict(addrs=_S2C, ident=24559, length=118, flags=".", seq=ISN + 32, ack=255257675,
                  window=4117, cksum=0x2375, timestamps=_TS, payload_len=66),
    "ACK98": dict(addrs=_C2S, ident=22892, length=52, flags=".", seq=255257675,
                  ack=ISN + 98, window=4114, cksum=0x7B8B, timestamps=(387824265, 387824164),
                  payload_len=0),
}
