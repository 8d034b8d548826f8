"""Grading: anyone's responder, checked on the wire against a rubric's lessons (issue 11).

* :mod:`harness.grade.rubric` -- rubrics as data (``rubrics/*.yml``);
* :mod:`harness.grade.submission` -- what a submission is, its build in the sandbox;
* :mod:`harness.grade.sandbox` -- the netns sandbox and the limits;
* :mod:`harness.grade.probe` / :mod:`harness.grade.launcher` -- the program in the VM,
  started, seen ready, stopped, from the outside;
* :mod:`harness.grade.grader` -- one submission on a lab of its own (or one leased);
* :mod:`harness.grade.klass` -- a class, N at a time on a pool of N labs;
* :mod:`harness.report.card` -- the report card.

``docs/grading.md`` is the student contract and the teacher's guide.
"""
