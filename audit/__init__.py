"""Provable history: seals of the hash chain, its verification, the record of reads."""
