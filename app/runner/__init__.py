"""Stage execution: subprocess supervision, the control loop, heartbeats, workers.

What the front ends call: :func:`app.runner.launch.start_runner` (a detached runner, its
outcome as a :class:`~app.runner.launch.RunnerStart`), :class:`app.runner.runner.Runner`
(in this process) and :class:`app.runner.worker.Worker`. Nothing here imports a front end
(``app.cli``, ``app.tui``): the runner works on an :class:`app.context.Context`.
"""
