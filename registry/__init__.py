"""The official village registry (NBS statistical division codes) that coverage is measured
against: a library that knows neither side, used by central, provisioning and the demo."""

from registry.divisions import (
    COUNTRY_NAME,
    LEN_BY_LEVEL,
    LEVEL_BY_LEN,
    VILLAGE_LEVEL,
    ImportReport,
    Registry,
    RegistryError,
    Unit,
    former_names,
    village_in_package,
)

__all__ = [
    "COUNTRY_NAME",
    "LEN_BY_LEVEL",
    "LEVEL_BY_LEN",
    "VILLAGE_LEVEL",
    "ImportReport",
    "Registry",
    "RegistryError",
    "Unit",
    "former_names",
    "village_in_package",
]
