"""Atari envs (core.atari): the standard preprocessing on both backends, raw rewards, episodic life that
continues the game, NEXT_STEP reset steps, and the same observations as gymnasium's own wrappers."""

from __future__ import annotations

import importlib.util
import os

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("ale_py", minversion="0.11",
                    reason="the Atari tests need ale-py >= 0.11 (ROMs, C++ AtariVectorEnv): pip install ale-py")

from gymnasium.vector import AutoresetMode  # noqa: E402
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation  # noqa: E402

from asynca3c.core.atari import atari_game, atari_spaces, is_atari, make_atari_env, make_atari_vector  # noqa: E402
from asynca3c.errors import EnvError  # noqa: E402

needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None,
                               reason="gymnasium's AtariPreprocessing needs OpenCV: pip install opencv-python-headless")
BACKENDS = [pytest.param("ale", id="ale"), pytest.param("gymnasium", id="gymnasium", marks=needs_cv2)]
NOOP, FIRE = 0, 1  # Breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT


def _lives(info) -> np.ndarray:
    return np.asarray(info["lives"])


def test_ids_spaces_and_refusals():
    assert is_atari("ALE/Pong-v5") and is_atari("ALE/Breakout-v5") and is_atari("PongNoFrameskip-v4")
    assert not is_atari("CartPole-v1") and not is_atari("ALE/Pong-ram-v5") and not is_atari("NoSuchGame-v9")
    assert atari_game("ALE/MsPacman-v5") == "ms_pacman"
    obs_space, act_space = atari_spaces("ALE/Breakout-v5")
    assert obs_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert act_space == gym.spaces.Discrete(4)
    with pytest.raises(EnvError, match="not an Atari environment"):
        make_atari_vector("CartPole-v1", 2, training=True)
    with pytest.raises(EnvError, match="backend="):
        make_atari_vector("ALE/Pong-v5", 2, training=True, backend="cuda")


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_vector_shapes_dtypes_and_autoreset_mode(backend, training):
    envs = make_atari_vector("ALE/Pong-v5", 3, training=training, backend=backend)
    try:
        assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        assert envs.single_observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        assert envs.single_action_space == gym.spaces.Discrete(6)
        obs, info = envs.reset(seed=1)
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
        assert info["game_over"].shape == (3,) and not info["game_over"].any()
        obs, rew, term, trunc, info = envs.step(np.array([0, 2, 3]))
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8
        assert rew.shape == term.shape == trunc.shape == (3,)
        assert info["game_over"].dtype == np.bool_ and info["game_over"].shape == (3,)
    finally:
        envs.close()


@needs_cv2
def test_single_env_shapes_and_rgb_frames_for_video():
    env = make_atari_env("ALE/Breakout-v5", render_mode="rgb_array")
    try:
        obs, info = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and not info["game_over"]
        assert env.observation_space == gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        frame = env.render()
        assert isinstance(frame, np.ndarray) and frame.shape == (210, 160, 3) and frame.dtype == np.uint8
        obs, _, _, _, info = env.step(FIRE)
        assert obs.shape == (4, 84, 84) and info["game_over"] is False
    finally:
        env.close()


@needs_cv2
def test_single_env_is_gymnasiums_own_preprocessing():
    """Same seed (so the same no-ops from the env's np_random), same actions: identical to a hand-built
    AtariPreprocessing + FrameStackObservation chain (zero padding, as ale-py's and SB3's stacks)."""
    ours = make_atari_env("ALE/Pong-v5", fire_reset=False)
    ref = gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)
    ref = FrameStackObservation(AtariPreprocessing(ref, noop_max=30, frame_skip=4, screen_size=84,
                                                   terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False),
                                4, padding_type="zero")
    try:
        a, _ = ours.reset(seed=7)
        b, _ = ref.reset(seed=7)
        np.testing.assert_array_equal(a, b)
        rng = np.random.default_rng(0)
        rewards = 0.0
        for _ in range(200):
            action = int(rng.integers(6))
            a, ra, ta, ua, _ = ours.step(action)
            b, rb, tb, ub, _ = ref.step(action)
            np.testing.assert_array_equal(a, b)
            assert (ra, ta, ua) == (rb, tb, ub)
            rewards += abs(float(ra))
        assert rewards > 0  # points were scored: the comparison covered rewards, not only frames
    finally:
        ours.close()
        ref.close()


@needs_cv2
@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
def test_ale_and_gymnasium_backends_agree_exactly_without_noops(training):
    """With no random no-ops the C++ vector and gymnasium's wrappers start from the same frame and give
    bit-identical observations, rewards, flags and lives, through life losses and game overs."""
    kw = {"training": training, "noop_max": 0}
    ale = make_atari_vector("ALE/Breakout-v5", 2, backend="ale", **kw)
    gymn = make_atari_vector("ALE/Breakout-v5", 2, backend="gymnasium", **kw)
    try:
        np.testing.assert_array_equal(ale.reset(seed=3)[0], gymn.reset(seed=3)[0])
        rng = np.random.default_rng(1)
        terms = game_overs = 0
        for _ in range(400):
            actions = rng.integers(4, size=2)
            a, b = ale.step(actions), gymn.step(actions)
            for x, y in zip(a[:4], b[:4]):
                np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(a[4]["game_over"], b[4]["game_over"])
            np.testing.assert_array_equal(_lives(a[4]), _lives(b[4]))
            terms += int(a[2].sum())
            game_overs += int(a[4]["game_over"].sum())
        assert game_overs >= 1 and (terms > game_overs if training else terms == game_overs)
    finally:
        ale.close()
        gymn.close()


@needs_cv2
def test_backends_with_noops_differ_only_in_their_noop_counts():
    """Each backend draws its own no-op counts (C++ RNG vs np_random), so the first frames may differ where
    the ball or a paddle moved; the screens are otherwise the same."""
    ale = make_atari_vector("ALE/Pong-v5", 4, training=True, backend="ale")
    gymn = make_atari_vector("ALE/Pong-v5", 4, training=True, backend="gymnasium")
    try:
        a, _ = ale.reset(seed=0)
        b, _ = gymn.reset(seed=0)
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a[:, :3], 0)  # zero-padded stacks on both
        np.testing.assert_array_equal(b[:, :3], 0)
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 2.0  # measured 0.0 to 0.6: a few ball and paddle pixels
    finally:
        ale.close()
        gymn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_rewards_are_raw_not_clipped(backend):
    """Space Invaders scores 5 to 200 points a hit; random play hits within a few hundred steps."""
    envs = make_atari_vector("ALE/SpaceInvaders-v5", 4, training=True, backend=backend)
    try:
        envs.reset(seed=0)
        rng = np.random.default_rng(0)
        best = 0.0
        for _ in range(150):
            _, rew, _, _, _ = envs.step(rng.integers(envs.single_action_space.n, size=4))
            best = max(best, float(rew.max()))
        assert best >= 5
    finally:
        envs.close()


def _play_until_game_over(envs, action: int, limit: int = 600):
    """Step one env with a fixed action until its game ends, then once more; every step's results."""
    steps = []
    for _ in range(limit):
        obs, rew, term, trunc, info = envs.step(np.array([action]))
        steps.append((obs[0].copy(), float(rew[0]), bool(term[0]), bool(trunc[0]), bool(info["game_over"][0]),
                      int(_lives(info)[0]), int(np.asarray(info["episode_frame_number"])[0])))
        if len(steps) >= 2 and steps[-2][4]:
            return steps
    raise AssertionError(f"no game over in {limit} steps")


@pytest.mark.parametrize("backend", BACKENDS)
def test_episodic_life_ends_the_episode_but_continues_the_game(backend):
    """Breakout, the agent only ever plays NOOP: each life loss is terminal but not a game over, the next
    step is a reset step (reward 0, fresh stack) that serves the ball with FIRE, and the lives count down
    4, 3, 2, 1 in one game; only the last loss is a game over, after which a new game starts."""
    envs = make_atari_vector("ALE/Breakout-v5", 1, training=True, backend=backend)
    try:
        envs.reset(seed=0)
        steps = _play_until_game_over(envs, NOOP)
    finally:
        envs.close()
    ends = [i for i, s in enumerate(steps) if s[2] or s[3]]
    assert [steps[i][5] for i in ends] == [4, 3, 2, 1, 0]  # one game: the lives never go back to 5
    assert [steps[i][4] for i in ends] == [False] * 4 + [True]
    assert not any(s[4] for i, s in enumerate(steps) if i not in ends)  # game_over only at the end
    for i in ends[:4]:
        obs, rew, term, trunc, game_over, lives, frame = steps[i + 1]  # the reset step after a life loss
        assert rew == 0.0 and not term and not trunc and not game_over
        assert lives == steps[i][5] and frame > steps[i][6]  # the same game, further on
        np.testing.assert_array_equal(obs[:3], 0)  # a fresh-start observation
        assert obs[3].any()
    obs, rew, term, trunc, game_over, lives, frame = steps[-1]  # the reset step after the game over
    assert rew == 0.0 and not (term or trunc or game_over) and lives == 5 and frame < steps[-2][6]
    np.testing.assert_array_equal(obs[:3], 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_counts_whole_games(backend):
    """training=False: the lives run out within one episode; only the game over is terminal. The agent
    only ever plays NOOP: the env serves each new ball itself (FIRE), as it does in training, so a policy
    that never learned to serve does not stall the game."""
    envs = make_atari_vector("ALE/Breakout-v5", 1, training=False, backend=backend)
    try:
        envs.reset(seed=0)
        steps = _play_until_game_over(envs, NOOP)
    finally:
        envs.close()
    lives = [s[5] for s in steps[:-1]]
    assert lives[0] == 5 and lives[-1] == 0 and sorted(set(lives)) == [0, 1, 2, 3, 4, 5]
    assert [s[2] for s in steps[:-1]] == [False] * (len(steps) - 2) + [True]
    assert all(s[4] == (s[2] or s[3]) for s in steps)
    assert steps[-1][1] == 0.0 and steps[-1][5] == 5  # the NEXT_STEP reset step: a new game


@pytest.mark.parametrize("backend", BACKENDS)
def test_reset_step_ignores_the_agents_action(backend):
    """After a life loss the env plays FIRE itself: an agent pressing LEFT then has the same game as one
    pressing RIGHT on that step (the action is not part of any episode)."""
    results = []
    for reset_action in (2, 3):
        envs = make_atari_vector("ALE/Breakout-v5", 1, training=True, backend=backend, noop_max=0)
        try:
            envs.reset(seed=0)
            term, seen = False, []
            while not term:
                _, _, t, _, _ = envs.step(np.array([NOOP]))
                term = bool(t[0])
            for action in [reset_action] + [NOOP] * 5:
                obs, rew, *_ = envs.step(np.array([action]))
                seen.append((obs.copy(), rew.copy()))
            results.append(seen)
        finally:
            envs.close()
    for (oa, ra), (ob, rb) in zip(*results):
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)


@needs_cv2
def test_single_env_episodic_life_matches_the_vector():
    """make_atari_env(training=True): terminated at a life loss, and reset() continues the game with the
    same reset step as the vector (both backends are the same game frame for frame without no-ops)."""
    env = make_atari_env("ALE/Breakout-v5", training=True, noop_max=0)
    envs = make_atari_vector("ALE/Breakout-v5", 1, training=True, backend="ale", noop_max=0)
    try:
        single, _ = env.reset(seed=5)
        vector, _ = envs.reset(seed=5)
        np.testing.assert_array_equal(single, vector[0])
        rng = np.random.default_rng(2)
        life_losses = game_overs = 0
        done = False
        for _ in range(500):
            action = int(rng.integers(4))
            vector, rew, term, trunc, vinfo = envs.step(np.array([action]))
            if done:  # the vector's reset step; the single env resets
                single, sinfo = env.reset()
                np.testing.assert_array_equal(single, vector[0])
                assert rew[0] == 0.0 and _lives(vinfo)[0] == sinfo["lives"]
                done = False
                continue
            single, r, t, u, sinfo = env.step(action)
            np.testing.assert_array_equal(single, vector[0])
            assert (r, t, u, sinfo["game_over"]) == (rew[0], term[0], trunc[0], vinfo["game_over"][0])
            done = t or u
            life_losses += bool(t and not sinfo["game_over"])
            game_overs += bool(sinfo["game_over"])
        assert life_losses >= 4 and game_overs >= 1
    finally:
        env.close()
        envs.close()


@needs_cv2
def test_single_env_evaluation_serves_after_a_life_loss_as_the_vector_does():
    """make_atari_env(training=False), the evaluation and video env: a NOOP-only agent loses all five lives
    in one episode (the env serves each ball), frame for frame as the vector."""
    env = make_atari_env("ALE/Breakout-v5", training=False, noop_max=0)
    envs = make_atari_vector("ALE/Breakout-v5", 1, training=False, backend="ale", noop_max=0)
    try:
        single, _ = env.reset(seed=3)
        vector, _ = envs.reset(seed=3)
        lives = []
        for _ in range(2000):
            vector, rew, term, trunc, vinfo = envs.step(np.array([NOOP]))
            single, r, t, u, sinfo = env.step(NOOP)
            np.testing.assert_array_equal(single, vector[0])
            assert (r, t, u, sinfo["game_over"]) == (rew[0], term[0], trunc[0], vinfo["game_over"][0])
            lives.append(sinfo["lives"])
            if t or u:
                break
        assert t and sinfo["game_over"] and lives[-1] == 0 and sorted(set(lives)) == [0, 1, 2, 3, 4, 5]
    finally:
        env.close()
        envs.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_closing_the_ale_backend_ends_its_threads():
    def threads() -> int:
        return len(os.listdir("/proc/self/task"))

    before = threads()
    envs = make_atari_vector("ALE/Pong-v5", 4, training=True, backend="ale", num_threads=2)
    envs.reset(seed=0)
    envs.step(np.zeros(4, np.int64))
    assert threads() == before + 2
    envs.close()
    assert threads() == before
    envs.close()  # twice is harmless
