"""Feature code shared by training (finscore.compression) and the workers (finscore.streams).

numpy + stdlib only: no torch, no Kafka.
"""
