"""SmartQ benchmarks: each bench_*.py measures one budget of DESIGN §9 and writes JSON to bench/results/."""
