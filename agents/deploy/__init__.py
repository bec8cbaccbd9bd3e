"""The host agent (`vvho deploy`): runs an exported policy bundle on a live host, guarded.

It loads only ONNX + a JSON manifest (numpy and onnxruntime, never torch or pickle), measures through the
live backend, builds the observation exactly as the env does in training, asks the policy, passes the
action through the operator's guards, applies it transactionally, and records everything.

Modules: limits (the operator's limits file), policy (bundle + observation + action decoding), guards
(bounds, step size, rate, health, kill switch, SLO-regression rollback), audit (the JSONL log),
metrics (Prometheus on loopback), agent (the control loop and its lifecycle), gate (the promotion
rule), report (`vvho deploy status`).
"""
