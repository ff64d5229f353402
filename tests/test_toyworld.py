"""ToyWorld: determinism, camera model, geometry invariants, dynamics, branching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from featureflow.data import CLASSES, ToyState, ToyWorld
from featureflow.data.dynamics import footprint_radius

RES = 32
FIELDS = ("rgb", "depth", "normals", "segmentation", "instances", "positions", "velocities")


@pytest.fixture(scope="module")
def world() -> ToyWorld:
    return ToyWorld(resolution=RES)


@pytest.fixture(scope="module")
def clip(world):
    return world.clip(seed=7, length=12, stride=2)


def _camera_from_config(cfg: dict) -> tuple[np.ndarray, np.ndarray, float]:
    """Camera position, world->camera rotation and focal length, computed independently."""
    el = math.radians(cfg["elevation"])
    dist = cfg["camera_distance"]
    pos = np.array([0.0, -dist * math.cos(el), dist * math.sin(el)])
    fwd = -pos / np.linalg.norm(pos)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    f = (cfg["resolution"] / 2) / math.tan(math.radians(cfg["fov"]) / 2)
    return pos, np.stack([right, down, fwd]), f


def _ray(cfg: dict, u: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    """World-space ray of pixel (column u, row v), scaled to unit camera z."""
    pos, rot, f = _camera_from_config(cfg)
    c = cfg["resolution"] / 2
    ray_cam = np.array([(u + 0.5 - c) / f, (v + 0.5 - c) / f, 1.0])
    return pos, rot.T @ ray_cam


def _project(cfg: dict, point: np.ndarray) -> tuple[int, int]:
    pos, rot, f = _camera_from_config(cfg)
    x, y, z = rot @ (point - pos)
    c = cfg["resolution"] / 2
    return int(math.floor(f * x / z + c)), int(math.floor(f * y / z + c))


def _single(world: ToyWorld, shape: int, xy=(0.0, 0.0), size=0.3, yaw=0.0) -> ToyState:
    return ToyState(
        positions=torch.tensor([list(xy)], dtype=torch.float64),
        velocities=torch.zeros(1, 2, dtype=torch.float64),
        shapes=torch.tensor([shape]),
        sizes=torch.tensor([size], dtype=torch.float64),
        yaws=torch.tensor([yaw], dtype=torch.float64),
        colours=torch.tensor([[0.8, 0.2, 0.2]]),
        key=0,
    )


def test_clip_shapes_and_dtypes(clip):
    t = 12
    assert clip.rgb.shape == (t, 3, RES, RES) and clip.rgb.dtype == torch.float32
    assert clip.depth.shape == (t, RES, RES)
    assert clip.normals.shape == (t, 3, RES, RES)
    assert clip.segmentation.shape == (t, RES, RES) and clip.segmentation.dtype == torch.int64
    assert clip.instances.shape == (t, RES, RES) and clip.instances.dtype == torch.int64
    m = clip.shapes.numel()
    assert 2 <= m <= 4 and clip.positions.shape == (t, m, 2)
    assert 0.0 <= float(clip.rgb.min()) and float(clip.rgb.max()) <= 1.0
    assert set(clip.segmentation.unique().tolist()) <= set(range(len(CLASSES)))
    assert set(clip.instances.unique().tolist()) <= set(range(m + 1))


def test_same_seed_is_bit_identical_and_ignores_global_rng(world, clip):
    torch.manual_seed(1234)
    np.random.seed(99)
    again = ToyWorld(resolution=RES).clip(seed=7, length=12, stride=2)
    for name in FIELDS:
        assert torch.equal(getattr(clip, name), getattr(again, name)), name
    other = world.clip(seed=8, length=12, stride=2)
    assert not torch.equal(clip.rgb, other.rgb)


def test_step_render_and_rollout_agree(world, clip):
    state = world.reset(7)
    for k in (0, 3, 11):
        s = world.step(state, 2 * k)
        assert s.step == 2 * k
        assert torch.equal(s.positions, clip.positions[k])
        frame = world.render(s)
        assert frame.rgb.shape == (3, RES, RES)
        assert torch.equal(frame.rgb, clip.rgb[k]) and torch.equal(frame.depth, clip.depth[k])
    assert state.step == 0  # stepping never mutates a state


def test_normals_unit_on_every_surface_pixel(clip):
    surface = clip.segmentation > 0
    norm = clip.normals.norm(dim=1)
    assert surface.any()
    assert torch.allclose(norm[surface], torch.ones(()), atol=1e-5)
    background = (~surface).unsqueeze(1).expand_as(clip.normals)
    expected = torch.tensor([0.0, 0.0, -1.0]).view(1, 3, 1, 1).expand_as(clip.normals)
    assert torch.equal(clip.normals[background], expected[background])


def test_depth_positive_and_floor_depth_matches_ray_plane_intersection(world, clip):
    assert bool((clip.depth > 0).all())
    assert bool((clip.depth[clip.segmentation == 0] == world.far).all())
    frame = 5
    rows, cols = torch.nonzero(clip.segmentation[frame] == 1, as_tuple=True)
    assert rows.numel() > 50
    for v, u in list(zip(rows.tolist(), cols.tolist()))[:: max(1, rows.numel() // 40)]:
        origin, ray = _ray(world.config, u, v)
        t = -origin[2] / ray[2]  # ray-plane intersection with z = 0; t is the depth (unit camera z)
        hit = origin + t * ray
        assert abs(hit[0]) <= world.arena and abs(hit[1]) <= world.arena
        assert float(clip.depth[frame, v, u]) == pytest.approx(t, rel=1e-5)


@pytest.mark.parametrize("shape", [2, 3, 4])
def test_single_object_class_instance_and_depth(world, shape):
    size = 0.3
    state = _single(world, shape, xy=(0.2, -0.1), size=size, yaw=0.3)
    frame = world.render(state)
    centre = np.array([0.2, -0.1, size])
    u, v = _project(world.config, centre)
    assert int(frame.segmentation[v, u]) == shape
    assert CLASSES[shape] in ("sphere", "cube", "cylinder")
    assert int(frame.instances[v, u]) == 1
    # Far corner of the image sees floor or background, never the object.
    assert int(frame.instances[0, 0]) == 0
    # Instance and class masks agree.
    assert torch.equal(frame.instances == 1, frame.segmentation == shape)
    if shape == 2:  # sphere: depth and normal equal the analytic ray-sphere hit
        origin, ray = _ray(world.config, u, v)
        oc = origin - centre
        a, b, c = ray @ ray, 2 * ray @ oc, oc @ oc - size**2
        t = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
        assert float(frame.depth[v, u]) == pytest.approx(t, rel=1e-5)
        _, rot, _ = _camera_from_config(world.config)
        normal_cam = rot @ ((origin + t * ray - centre) / size)
        assert np.allclose(frame.normals[:, v, u].numpy(), normal_cam, atol=1e-4)


def test_objects_stay_in_arena_over_long_rollout():
    world = ToyWorld(resolution=8)
    for seed in range(3):
        c = world.clip(seed, length=300)
        radius = footprint_radius(c.shapes, c.sizes)
        assert bool(((c.positions.abs() + radius.view(1, -1, 1)) <= world.arena + 1e-9).all())
        speed = c.velocities.norm(dim=-1)
        assert bool((speed > 0).all())
        # footprints do not interpenetrate (up to a small residual in rare squeezes)
        dist = (c.positions[:, :, None] - c.positions[:, None]).norm(dim=-1)
        overlap = radius[:, None] + radius[None] - dist
        overlap[:, torch.eye(radius.numel(), dtype=torch.bool)] = 0
        assert float(overlap.max()) < 0.01


def test_turn_probability_controls_heading_changes():
    calm = ToyWorld(resolution=8, num_objects=(1, 1), turn_prob=0.0)
    c = calm.clip(3, length=80)
    v = c.velocities[:, 0]
    # without turns only wall bounces flip signs: |vx|, |vy| never change
    assert torch.allclose(v.abs(), v[0].abs().expand_as(v))
    wild = ToyWorld(resolution=8, num_objects=(1, 1), turn_prob=1.0)
    w = wild.clip(3, length=20).velocities[:, 0]
    assert not torch.allclose(w.abs(), w[0].abs().expand_as(w))
    assert torch.allclose(w.norm(dim=-1), w[0].norm().expand(20))  # turns keep the speed


def test_branch_shares_start_and_differs_afterwards(world):
    state = world.state_at(11, 5)
    futures = world.branch(state, n=4, steps=6, seed=0)
    m = state.num_objects
    assert futures.rgb.shape == (4, 6, 3, RES, RES) and futures.positions.shape == (4, 6, m, 2)
    # every future starts from the shared state: one step of at most |v| * dt away
    max_move = state.velocities.norm(dim=-1).max() * world.dt + 1e-9
    step1 = (futures.positions[:, 0] - state.positions).norm(dim=-1)
    assert bool((step1 <= max_move * 1.0001).all())
    # ... and they differ afterwards
    last = futures.positions[:, -1].reshape(4, -1)
    assert torch.cdist(last, last)[~torch.eye(4, dtype=torch.bool)].min() > 0
    # deterministic given the seed; another seed gives other futures
    assert torch.equal(futures.rgb, world.branch(state, n=4, steps=6, seed=0).rgb)
    assert not torch.equal(futures.positions, world.branch(state, n=4, steps=6, seed=1).positions)


def test_branch_without_turns_reproduces_the_rollout():
    world = ToyWorld(resolution=16, turn_prob=0.0)
    state = world.state_at(2, 3)
    futures = world.branch(state, n=3, steps=4)
    truth = world.rollout(state, length=5)
    for i in range(3):
        assert torch.equal(futures.positions[i], truth.positions[1:])
        assert torch.equal(futures.rgb[i], truth.rgb[1:])


def test_splits_are_disjoint_ranges():
    seeds = {s: ToyWorld.split_seeds(s) for s in ("train", "val", "test")}
    assert seeds["train"].stop <= seeds["val"].start and seeds["val"].stop <= seeds["test"].start
    with pytest.raises(ValueError, match="unknown split"):
        ToyWorld.split_seeds("dev")


def test_bad_arguments_have_clear_errors(world):
    with pytest.raises(ValueError, match="resolution"):
        ToyWorld(resolution=3)
    with pytest.raises(ValueError, match="turn_prob"):
        ToyWorld(turn_prob=1.5)
    with pytest.raises(ValueError, match="length"):
        world.clip(0, length=0)
    with pytest.raises(ValueError, match="stride"):
        world.clip(0, length=2, stride=0)
    with pytest.raises(TypeError, match="seed"):
        world.reset("0")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must"):
        world.branch(world.reset(0), n=0, steps=2)


def test_config_round_trip(world):
    rebuilt = ToyWorld.from_config(world.config)
    assert rebuilt.config == world.config
    assert torch.equal(rebuilt.clip(1, 2).rgb, world.clip(1, 2).rgb)


@pytest.mark.parametrize("resolution", [64, 128, 256])
def test_higher_resolutions_render(resolution):
    world = ToyWorld(resolution=resolution)
    c = world.clip(0, length=2, stride=5)
    assert c.rgb.shape == (2, 3, resolution, resolution)
    assert torch.allclose(c.normals.norm(dim=1)[c.segmentation > 0], torch.ones(()), atol=1e-5)


def test_screen_crops_change_nothing(monkeypatch):
    """Testing each object only inside its screen rectangle equals testing every pixel."""
    from featureflow.data.raycast import SceneRenderer

    world = ToyWorld(resolution=24)
    fast = world.clip(5, length=6, stride=4)
    full = torch.arange(24 * 24)
    monkeypatch.setattr(SceneRenderer, "_crops", lambda self, p, s, r: full.expand(p.shape[0], p.shape[1], -1))
    slow = world.clip(5, length=6, stride=4)
    for name in ("rgb", "depth", "normals", "segmentation", "instances"):
        assert torch.equal(getattr(fast, name), getattr(slow, name)), name


def test_objects_cast_shadows_on_the_floor():
    lit = ToyWorld(resolution=32, shadows=False)
    shaded = ToyWorld(resolution=32, shadows=True)
    state = _single(lit, 2, xy=(0.0, 0.0), size=0.35)
    a, b = lit.render(state), shaded.render(state)
    floor = a.segmentation == 1
    darker = (b.rgb.sum(0) < a.rgb.sum(0) - 1e-6) & floor
    assert darker.sum() >= 3  # a shadow exists ...
    assert torch.equal(a.rgb[:, ~floor], b.rgb[:, ~floor])  # ... and only on the floor
    assert torch.equal(a.depth, b.depth) and torch.equal(a.segmentation, b.segmentation)


def test_renderer_rejects_bad_shapes(world):
    from featureflow import ShapeError

    s = world.reset(0)
    with pytest.raises(ShapeError, match="positions"):
        world.renderer.render(torch.zeros(2, s.num_objects, 3), s.shapes, s.sizes, s.yaws, s.colours)
