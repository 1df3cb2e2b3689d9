"""deeppot's benchmarks: one package, run from the repository root as

    python -m benchmarks.<name> [args]        # --help describes each

Every script writes its results under `benchmarks/results/` through the one harness,
`benchmarks._harness` (results path, JSON + markdown table, timing protocol, the command
line it records, child processes). Shared workloads: `_step` (the potential training step
and its matmul floor), `_systems` (the disk and halo DF systems, their variants built by
`deeppot.pipeline.build_df`, case (c)'s analytic fits), `_galpy_halo` (galpy's halos;
`python -m benchmarks._galpy_halo PATH` writes the catalogue of `configs/halo.toml`),
`_galpy_zoo` (the zoo of spherical systems sampled by galpy's DFs, with galpy's truth).

Scripts:

- `bar_experiment`: barred galaxies end to end, pattern speed and bar force, in stages.
- `bench_agama_actions`: actions in a learned disk potential by agama, against the truth.
- `bench_bands`: calibration of replica bands from stored replica sets, and its transfer.
- `bench_conditional`: conditional DFs p(v | x) on a Plummer sphere: score errors and fits.
- `bench_df_finetune`: fine-tune a Plummer flow-matching DF, following its score error.
- `bench_df_systems`: DF recipes on the disk and the cusped halo, scores to potential fits.
- `bench_fit_exact`: potential fits on exact scores, recipe against recipe.
- `bench_interop`: exported potentials (galpy, gala, agama) against deeppot.
- `bench_laplacian`: `fit_potential`'s training step against the matmul floor (`make bench`).
- `bench_mocks`: disk orbit integration against galpy's symplec6_c.
- `bench_odd_errors`: which score errors (odd or even under a symmetry) bias a fit.
- `bench_reflect_fits`: case (c)'s Miyamoto–Nagai fits from a run's DF, with reflections.
- `bench_scaling`: data-parallel step and score time against device count.
- `bench_scores`: DF models on a Plummer sphere: likelihood, score errors, speed.
- `bench_sph_levers`: levers on the spherical DF's score error, by radius.
- `bench_streaming`: 2^24 scores streamed to HDF5 and a fit read back from the file.
- `bench_tail`: the disk's learned potential beyond its data: the tail's v_c, the force's
  sign to 100×, the agama expansions inside the region.
- `bench_vs_reference`: the training step against the TensorFlow reference, interleaved.
- `bench_zoo`: the zoo of galpy spherical systems end to end through `deeppot run`.
- `check_equilibrium`: are a halo mock's stars an equilibrium, its exact scores theirs.
- `demo_split`: a Plummer run's fit refitted on exact scores at its own points, by radius.
- `halo_score_anatomy`: where a halo DF's score error sits, by radius and component.
- `profile_step`: per-op profile of the compiled training step.
- `reproduce`: the paper's experiments from `benchmarks/configs/`.
- `snapshot_mock`: a Plummer mock as a Gadget-4 snapshot and as CSV (the snapshot bar).
- `survey_disk`: a survey-like disk end to end in physical units.

`bash benchmarks/gpu.sh` runs the GPU set.
"""
