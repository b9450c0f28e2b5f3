"""The study behind the notebooks: what they compute, draw and localize, and how they are run.

params      the parameters every notebook resolves (profile, data_dir, run_dir) and save_figure
analysis    data statistics, kernels, receptive fields, a trained model's confusions and summary
measures    small numeric measures (numpy only) that the figures use
figures     every study figure (the training curves are tinyconv.training.plots)
localize    class activation maps, Grad-CAM, boxes and their scores; notebook 07's study
runner      run the notebooks headless with papermill; their committed outputs and provenance
"""
