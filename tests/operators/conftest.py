from tests.standins.fixtures import *  # noqa: F401,F403  (stand-in fixtures)
