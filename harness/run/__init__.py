"""Runs: one scenario on a lab, for real -- the responder (or a submission) in the VM over SSH,
the capture on the host side, the client, the lab's conditions (``invoke demo``)."""
