"""Which services a node runs, chosen by the sections of its configuration file.

Each section names a module with `from_config(config) -> NodeService | None`:
- [lan]      appliance.lan      replication with the branch's other devices
- [hardware] appliance.devices  printer, keypad, LED sign, announcer
- [hq]       appliance.uplink   the link to headquarters
"""

from __future__ import annotations

import importlib
import logging

from appliance.config import Config
from appliance.node import NodeService

logger = logging.getLogger(__name__)

SERVICE_MODULES = (("lan", "appliance.lan"), ("hardware", "appliance.devices"), ("hq", "appliance.uplink"))


def build_services(config: Config) -> list[NodeService]:
    services: list[NodeService] = []
    for section, module_name in SERVICE_MODULES:
        if section not in config.raw:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            logger.warning("[%s] is configured but %s is not part of this build", section, module_name)
            continue
        service = module.from_config(config)
        if service is not None:
            services.append(service)
    return services
