"""robot_rt.envs.shot: the shot solver through the env's contact law and flight, and the placement error budget."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from robot_rt.ballistics import BallParams, TableGeometry, simulate_batch
from robot_rt.envs.core import WorldConfig, paddle_contact
from robot_rt.envs.shot import landing_of_shot, solve_shot_normal, tangent_basis

LAW = dict(restitution=WorldConfig().paddle_restitution, friction=WorldConfig().paddle_friction)


def incoming(n: int, seed: int) -> np.ndarray:
    """Balls at the robot's hitting plane after their bounce, spinning as the default human's serves do."""
    rng = np.random.default_rng(seed)
    b = np.zeros((n, 9))
    b[:, 0] = 1.45
    b[:, 1] = rng.uniform(-0.4, 0.4, n)
    b[:, 2] = rng.uniform(0.95, 1.15, n)
    b[:, 3] = rng.uniform(2.5, 4.0, n)
    b[:, 4] = rng.normal(0.0, 0.3, n)
    b[:, 5] = rng.uniform(-0.8, 0.8, n)
    b[:, 6:9] = rng.normal([0.0, 50.0, 0.0], [15.0, 35.0, 25.0], (n, 3))
    return b


def test_tangent_basis_is_orthonormal_for_any_direction_including_vertical():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(64, 3))
    n[0] = [0, 0, 1]
    n[1] = [0, 0, -2]
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    e1, e2 = tangent_basis(n)
    for a, b in ((e1, e2), (e1, n), (e2, n)):
        np.testing.assert_allclose(np.sum(a * b, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(e1, axis=1), 1.0)
    np.testing.assert_allclose(np.linalg.norm(e2, axis=1), 1.0)


def test_landing_of_shot_matches_the_env_contact_law_and_the_float64_reference_flight():
    balls = incoming(32, 1)
    normal = np.tile([-0.93, 0.0, 0.37], (32, 1))
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    speed = np.full(32, 1.6)
    xy, after = landing_of_shot(balls, normal, speed, **LAW)
    expected_after = paddle_contact(
        balls, np.zeros((32, 3)), normal, speed[:, None] * normal, np.ones(32), BallParams().radius_m, **LAW
    )
    np.testing.assert_array_equal(after, expected_after)
    ref = simulate_batch(after, 1.5, 1e-3, BallParams(), TableGeometry(), backend="numpy", max_events=1)
    ref_xy = np.asarray(ref.event_state)[:, 0, :2]
    np.testing.assert_allclose(xy, ref_xy, atol=0.01)  # 4 ms steps against the 1 ms float64 reference
    assert np.all(xy[:, 0] < 0), "these shots cross the net and land on the human's half"


def test_solver_lands_reachable_balls_on_their_goals_and_reports_the_error_it_measures():
    n = 128
    balls = incoming(n, 2)
    rng = np.random.default_rng(3)
    goals = np.stack([rng.uniform(-1.1, -0.4, n), rng.uniform(-0.5, 0.5, n)], axis=1)
    start = np.tile([-0.9, 0.0, 0.4], (n, 1))
    normal, err = solve_shot_normal(balls, np.full(n, 1.6), goals, start, iterations=8, **LAW)
    np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, atol=1e-12)
    dist = np.linalg.norm(err, axis=1)
    assert np.mean(dist < 1e-3) > 0.8, f"only {np.mean(dist < 1e-3):.2f} of the shots converged"
    # the reported error is that of an independent flight of the returned normal
    xy, _ = landing_of_shot(balls, normal, np.full(n, 1.6), **LAW)
    np.testing.assert_allclose(xy - goals, err, atol=1e-12)
    # and the solver did work: the starting normal misses by decimetres
    xy0, _ = landing_of_shot(balls, start / np.linalg.norm(start, axis=1, keepdims=True), np.full(n, 1.6), **LAW)
    assert np.median(np.linalg.norm(xy0 - goals, axis=1)) > 0.1


def test_spin_changes_the_solution():
    """The reason for the solver: the same ball with and without its spin needs a different paddle normal."""
    balls = incoming(16, 4)
    still = balls.copy()
    still[:, 6:9] = 0.0
    goals = np.tile([-0.8, 0.0], (16, 1))
    start = np.tile([-0.9, 0.0, 0.4], (16, 1))
    n_spin, e1 = solve_shot_normal(balls, np.full(16, 1.6), goals, start, iterations=8, **LAW)
    n_still, e2 = solve_shot_normal(still, np.full(16, 1.6), goals, start, iterations=8, **LAW)
    ok = (np.linalg.norm(e1, axis=1) < 1e-3) & (np.linalg.norm(e2, axis=1) < 1e-3)
    assert ok.sum() >= 12
    angle = np.degrees(np.arccos(np.clip(np.sum(n_spin[ok] * n_still[ok], axis=1), -1, 1)))
    assert np.median(angle) > 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ball=np.zeros((4, 6))), "ball"),
        (dict(target_xy=np.zeros((3, 2))), "target_xy"),
        (dict(normal0=np.zeros((4, 2))), "normal0"),
    ],
)
def test_solver_names_the_bad_argument(kwargs, match):
    args = dict(ball=incoming(4, 0), paddle_speed_mps=np.full(4, 1.6), target_xy=np.zeros((4, 2)))
    args["normal0"] = np.tile([-1.0, 0, 0], (4, 1))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        solve_shot_normal(**args, **LAW)


def test_placement_error_budget_tool_end_to_end(tmp_path):
    path = Path(__file__).resolve().parents[1] / "tools" / "placement_error_budget.py"
    spec = importlib.util.spec_from_file_location("placement_error_budget", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rec = tool.record_contacts(12, seed=7, preset="default")
    assert len(rec["contact_env"]) >= 8  # the scripted policy touches most serves
    # every recorded contact is a ball in front of the paddle's face, coming towards it
    rel = rec["ball"][:, 3:6] - rec["paddle_velocity"]
    assert np.all(np.sum(rel * rec["normal"], axis=1) < 0)
    # the recorded contact inputs reproduce the env's landings (same contact law, same flight)
    after = paddle_contact(
        rec["ball"],
        np.zeros((len(rel), 3)),
        rec["normal"],
        rec["paddle_velocity"],
        np.ones(len(rel)),
        BallParams().radius_m,
        **LAW,
    )
    sim = simulate_batch(after, 1.5, 1e-3, BallParams(), TableGeometry(), max_events=1)
    landed = np.isfinite(rec["landing"][rec["contact_env"], 0])
    assert landed.sum() >= 6
    np.testing.assert_allclose(
        np.asarray(sim.event_state)[landed, 0, :2], rec["landing"][rec["contact_env"][landed]], atol=0.02
    )
    result = tool.budget(rec)
    rows = {r["name"].split(":")[0].split(" (")[0]: r for r in result["rows"]}
    assert rows["oracle"]["median_error_m"] < 1e-3
    assert rows["policy"]["landed"] == int(np.isfinite(rec["landing"][:, 0]).sum())
    out = tmp_path / "out"
    assert tool.main(["--episodes", "6", "--out", str(out)]) == 0
    assert (out / "placement_budget.json").exists() and (out / "placement_budget.md").exists()
