"""Everything that reads finished runs and writes tables and figures.

    runs         a `--regime all` directory as numbers (per regime: curve, best epoch, ...)
    run_report   its report: curves, mask utilization, summary.md
    study        a multi-seed study: statistics, contrasts, verdict, figures, summary.md
    tickets      lottery-ticket rounds beside their controls and supermasks
    masks        per-layer mask tables of a checkpoint and their history

Nothing that trains imports these; `smjax.report` (the command) picks the report that fits.
"""
