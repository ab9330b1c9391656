"""PortfolioEnv, PPO/SAC allocation agents under Ray Tune, baseline allocators, walk-forward backtest."""
