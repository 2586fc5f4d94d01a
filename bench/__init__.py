"""Side-by-side benchmarks (each file a script: ``python bench/bench_X.py --help``); a package only so that
tests can import a benchmark's baseline (``from bench import bench_dedup``)."""
