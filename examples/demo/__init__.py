"""The demo, an example outside the package: a tiny model learns referring segmentation of synthetic
shapes on the CPU, through the library's own modules.

- recipe.yaml: the training settings, a `text4seg.train` recipe (the same typed `TrainConfig`);
  demo.yaml: the knobs only the demo has (data size, answer form, curriculum, tokenizer fitting);
  settings.py reads both (`--set key.sub=value`, `demo.` keys going to demo.yaml).
- prepare.py: draws the synthetic data, rewrites the answers and orders the training records, and saves
  them (OUT/data/records, with its text4seg.json): the exact records training reads.
- model.py: the model surgery (fitted tokenizer, question-first chat template, sin-cos vision positions).
- run.py: prepare -> train -> calibrate the background bias -> evaluate -> pictures; `text4seg demo`
  and `make demo` run it.

Why these choices, and what each measured: bench/results/demo.md.
"""
