"""The one way the library writes a line for the user to read on the console.

Progress, results and warnings the user acts on are printed, flushed at once so that they can
be followed live through a pipe or into a log file; everything else goes through absl logging.
"""


def say(line: str, file=None):
  """Prints `line` to stdout (or `file`, such as sys.stderr), flushed."""
  print(line, file=file, flush=True)
