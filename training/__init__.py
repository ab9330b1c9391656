"""Return forecasters (LSTM, Transformer, GAT) on Ray Train and Ray Tune, forecast metrics, model registry."""
