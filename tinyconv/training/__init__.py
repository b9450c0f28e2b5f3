"""Training: the recipe, its schedule, the callbacks, a run folder and train().

recipe     TrainConfig, PROFILES, make_config, parse_value (no Keras)
overrides  text to typed recipe values (--set FIELD=VALUE, --FIELD VALUE, model.FIELD=VALUE)
schedule   the learning-rate schedules and the optimizer
callbacks  the training callbacks
history    history.csv, a run's per-epoch record: read_history, write_history (no Keras)
train      a run folder and train() as named steps
reference  the reference notebook's published curve and numbers, and which runs it is comparable with
plots      the training curves (live and saved)
run_state  a run's resumable state as pieces of at most 16 MiB with a sha256 manifest, and its restore
"""
