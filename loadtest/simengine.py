"""Simulated vLLM engine for integration tests and capacity simulation.

    python -m loadtest.simengine --port 8001 --model base --max-loras 2 --max-cpu-loras 4 \
        --load-ms 30 --token-ms 2

The implementation lives in `loadtest.sim`; this module is its public face.
"""

from loadtest.sim.app import create_app
from loadtest.sim.cli import main
from loadtest.sim.config import Faults, SimConfig
from loadtest.sim.engine import SimEngine
from loadtest.sim.server import SimEngineServer

__all__ = ["Faults", "SimConfig", "SimEngine", "SimEngineServer", "create_app", "main"]

if __name__ == "__main__":
    main()
