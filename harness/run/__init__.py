"""Runs: one scenario on a lab, for real -- the responder (or a submission) in the VM over SSH,
the capture on the host side, the clients, the lab's conditions (``invoke demo``); and the
lessons one after another on one lab (``invoke lessons``)."""
