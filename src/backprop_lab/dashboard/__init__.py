"""What a person sees of a run: TensorBoard's Graphs, Images and Text tabs, the loss-curve PNG and
the progress bar. One concern per callback, each made once at the end of training except the bar.

    graph.py      ComputationGraph   Graphs: the forward pass by the seed's names, to the loss;
                                     Text: what backward() walks
                  GraphFigure        Images and graph.png: the graph of one row with every value
                                     and gradient (drawn by drawn_graph.py)
    figures.py    TrainingPlots      Images: loss curve, parameters, first step, data and fit,
                                     loss surfaces
                  LossCurvePNG       <output dir>/loss_curve.png
    card.py       RunCard            Text: the run's results, first step and chosen config
    progress.py   ProgressBar        one bar for the run, once it has lasted more than a moment
    render.py     drawing the figures (and writing the graph) once ``fit`` has returned
    plots.py      the matplotlib figures themselves

Each writes on the global-rank-0 process only. This package imports nothing itself, so render.py's
worker process loads neither torch nor Lightning.
"""
