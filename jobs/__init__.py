"""Background jobs: scheduler, status tracking, leader lock, and the five jobs of SPEC §8."""
