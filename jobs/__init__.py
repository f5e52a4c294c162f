"""Everything a worker runs: price sources, the analysis math and the RQ job functions."""
