"""Reports: tables and figures made from fit results (they read results, never fit)."""
