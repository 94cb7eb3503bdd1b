"""dklscope: an active-learning controller for autonomous microscopy.

This package imports nothing heavy: ``dklscope.drivers`` must stay importable without torch.
The controller lives in submodules (`dklscope.campaign`, `dklscope.dkl`, ...).
"""

__version__ = "0.1.0"
