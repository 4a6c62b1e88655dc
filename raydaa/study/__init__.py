"""`raydaa study`: the paper's four research questions, each composed from sweeps.

    rq1  Table 1    single-stage ORPO/ASFT from the base model vs from the SFT model
                    (alignment term alone, and with the SFT term kept)
    rq2  Figure 1   ORPO/ASFT at β = 1 (best lr), then the β sweep: the gain from tempering
    rq3  Table 2,   all eight methods' two-stage grids -> `raydaa report` (Pareto fronts
         Figure 3   pooled pairwise vs pointwise, Table 2 summary)
    rq4  Figure 5   SFT on 1-100% of the SFT data (and the base model), each aligned with
                    every method's best RQ3 configuration

runner.py holds what the four share (namespaces, the resumable sweep loop, outputs) and
knows nothing of Ray; ray_runner.py runs a sweep's trials with Ray Tune; rqN.py plans a
question's sweeps and turns the store's rows into its table and figure.
"""

STUDIES = ("rq1", "rq2", "rq3", "rq4")
