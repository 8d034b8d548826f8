"""noraw.py -- never opens a raw socket (it sleeps), for tcplab's bad-input tests: "it opened no
raw socket within 10 s", and the lessons after the first are not run."""
import time

time.sleep(60)
