"""SHAP explainers for forecasters and policies, and plain-language rationales."""
