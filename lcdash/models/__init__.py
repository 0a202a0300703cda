"""Neural models (PyTorch). Import the submodules directly (`lcdash.models.astromer`, ...) so that
importing this package stays free of torch."""
