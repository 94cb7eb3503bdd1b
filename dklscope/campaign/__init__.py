"""An experiment, run: the campaign loop and what it needs to be safe and watched.

- `loop`: `Campaign`, the run loop (decide, move, acquire, journal; pipelined, pausable);
  `decisions`: when and how it decides (the model, the policy, the checkpoints);
  `resume`: restarting it from its journal; `measure`, `budget`, `park`, `drift`: finishing a
  measurement, the budget and dose account, parking the beam, drift correction;
- `journal`: the `Journal` (SQLite) every measurement is on before the next is asked for;
- `instruments`: the connection to a driver server, the built-in simulator or Nion's;
- `control`: the control socket (pause, resume, stop); `progress`: the progress events;
- `jsonsafe`: plain-JSON conversion of what is journaled and published.

Names are imported on first use, so the light modules (`instruments`, `journal`) load no torch.
"""

from dklscope import lazy_names

__getattr__, __dir__, __all__ = lazy_names(
    __name__,
    {
        "loop": ("Campaign",),
        "resume": ("CampaignError", "check_config_against"),
        "budget": ("budget_left",),
        "journal": ("DecisionRecord", "Journal", "JournalError", "Measurement"),
        "instruments": ("build_sample", "simulated_campaign", "simulated_microscope"),
        "control": ("ControlClient", "ControlError", "ControlServer"),
        "progress": ("ProgressPublisher",),
    },
)
