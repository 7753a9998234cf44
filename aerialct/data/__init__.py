"""Datasets: Potsdam facts, synthetic scenes, chip datasets and transforms."""
