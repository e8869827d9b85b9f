"""The 31 province-level regions of the mainland, with their six-digit administrative codes.

Population (millions, rounded) weights the synthetic card mix so demo and load traffic
looks like the real national distribution.
"""

from __future__ import annotations

from typing import NamedTuple


class Region(NamedTuple):
    code: str
    name: str
    population_m: int


PROVINCES: tuple[Region, ...] = (
    Region("110000", "Beijing", 22),
    Region("120000", "Tianjin", 14),
    Region("130000", "Hebei", 74),
    Region("140000", "Shanxi", 35),
    Region("150000", "Inner Mongolia", 24),
    Region("210000", "Liaoning", 42),
    Region("220000", "Jilin", 24),
    Region("230000", "Heilongjiang", 31),
    Region("310000", "Shanghai", 25),
    Region("320000", "Jiangsu", 85),
    Region("330000", "Zhejiang", 66),
    Region("340000", "Anhui", 61),
    Region("350000", "Fujian", 42),
    Region("360000", "Jiangxi", 45),
    Region("370000", "Shandong", 101),
    Region("410000", "Henan", 99),
    Region("420000", "Hubei", 58),
    Region("430000", "Hunan", 66),
    Region("440000", "Guangdong", 127),
    Region("450000", "Guangxi", 50),
    Region("460000", "Hainan", 10),
    Region("500000", "Chongqing", 32),
    Region("510000", "Sichuan", 84),
    Region("520000", "Guizhou", 39),
    Region("530000", "Yunnan", 47),
    Region("540000", "Tibet", 4),
    Region("610000", "Shaanxi", 40),
    Region("620000", "Gansu", 25),
    Region("630000", "Qinghai", 6),
    Region("640000", "Ningxia", 7),
    Region("650000", "Xinjiang", 26),
)

BY_CODE = {r.code: r for r in PROVINCES}

assert len(PROVINCES) == 31 and len(BY_CODE) == 31
