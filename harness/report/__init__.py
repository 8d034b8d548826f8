"""Reports: what a run leaves for people -- the transcript, result.json, the ladder diagram."""
