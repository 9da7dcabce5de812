"""The suite's private Mosquitto and PKI, re-exported from ``lab.mosquitto``.

``lab`` is shared with the benchmarks and the demo; this name stays for the tests' imports.
"""

from lab.mosquitto import (
    ACL_FILE as ACL_FILE,
)
from lab.mosquitto import (
    CONF_TEMPLATE as CONF_TEMPLATE,
)
from lab.mosquitto import (
    DEFAULT_DEVICE_IDS as DEFAULT_DEVICE_IDS,
)
from lab.mosquitto import (
    LOOPBACK as LOOPBACK,
)
from lab.mosquitto import (
    BrokerError as BrokerError,
)
from lab.mosquitto import (
    CertKey as CertKey,
)
from lab.mosquitto import (
    MosquittoBroker as MosquittoBroker,
)
from lab.mosquitto import (
    PKIError as PKIError,
)
from lab.mosquitto import (
    TestPKI as TestPKI,
)
from lab.mosquitto import (
    free_port as free_port,
)
from lab.mosquitto import (
    identity_plugin as identity_plugin,
)
from lab.mosquitto import (
    mosquitto_binary as mosquitto_binary,
)
from lab.mosquitto import (
    render_config as render_config,
)
