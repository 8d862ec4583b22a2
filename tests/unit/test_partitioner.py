"""The worker's partitioner: the same partitions as Kafka's clients (aiokafka, kafka-python, Java)."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streaming.app import item_partition, key_partition, murmur2


@pytest.mark.parametrize("length", range(0, 41))
def test_murmur2_equals_aiokafkas_for_every_tail_length(length: int) -> None:
    rng = random.Random(length)
    for _ in range(50):
        data = bytes(rng.randrange(256) for _ in range(length))
        assert murmur2(data) == aiokafka_murmur2(data)


def test_murmur2_matches_kafkas_java_reference_values() -> None:
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (as signed 32-bit ints there)
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
             b"abc": 479470107}
    for data, signed in cases.items():
        assert murmur2(data) == signed & 0xFFFFFFFF


def test_item_partition_is_the_partition_of_the_item_key() -> None:
    for item_id in (0, 7, 214_536_502, 10**15 + 3):
        assert item_partition(item_id, 4) == key_partition(str(item_id).encode(), 4)
