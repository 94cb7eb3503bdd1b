"""What a campaign did or is doing, read from the campaign or its journal.

- `report`: the figures and summary of ``dklscope report``; `model_records`: the models chosen
  and their calibration, per refit; `evaluation`: a simulated campaign against its ground truth;
  `sample_plots`: a simulated sample's truth;
- `export` (HDF5, npz) and `nsid` (sidpy datasets, with the ``nsid`` extra);
- the live view: `live` follows a running campaign; `view` serves the Bokeh page, laid out in
  `page` (with `page_style`) from the data `page_data` computes.

Names are imported on first use (the live view's Bokeh only when it is shown).
"""

from dklscope import lazy_names

__getattr__, __dir__, __all__ = lazy_names(
    __name__,
    {
        "report": ("ground_truth_figures", "summarize", "write_report"),
        "export": ("export_campaign",),
        "evaluation": ("map_metrics", "trace_metrics", "true_scalars"),
        "model_records": ("ModelRecord",),
        "live": ("EventFollower", "JournalFollower", "LiveCampaign"),
        "view": ("serve",),
    },
)
