# The image's entrypoint (`python3 -I`): isolated mode puts no script directory on sys.path, so the
# runner's package is added here, and nothing else.
import sys

sys.path.insert(0, "/opt/pybox")
from pybox_runner.main import main  # noqa: E402

main()
