"""p2p_l2: an emulator for layer-2 blockchain protocols on real processes and sockets."""

from .config import load_config
from .errors import (ConfigError, ControlError, LocalProtocolError, P2PL2Error, ProtocolError,
                     RemoteProtocolError, WaitTimeout)

__all__ = ["Cluster", "load_config", "open_memory_cluster", "P2PL2Error", "ConfigError",
           "ControlError", "ProtocolError", "LocalProtocolError", "RemoteProtocolError", "WaitTimeout"]


def __getattr__(name):  # keep `import p2p_l2` light for node processes
    if name == "Cluster":
        from .cluster.process import Cluster
        return Cluster
    if name == "open_memory_cluster":
        from .cluster.memory import open_memory_cluster
        return open_memory_cluster
    raise AttributeError(name)
