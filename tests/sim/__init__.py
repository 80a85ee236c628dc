"""Tests of dpct.sim, the mission simulator."""
