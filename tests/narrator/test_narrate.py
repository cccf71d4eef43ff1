"""The narrator against the real embedded model through its real HTTP server, and real Redis."""

import json

import pytest
import redis
from llm_fixtures import INJECTION, Relay, closed_url, scenes

from metabgm_narrator.narrate import NarrateStage, fallback, guard
from metabgm_shared import metrics
from metabgm_shared.contracts import Job, Mode, SceneWindow
from metabgm_shared.llm import Client
from metabgm_shared.settings import Narrator
from metabgm_shared.state import Players, channel

SCENE = "mode: night; time: Night; biome: Forest; weather: Raining"


def stage(url: str, redis_url: str, **kw) -> NarrateStage:
    s = Narrator(redis_url=redis_url, llm_base_url=url, llm_backoff_s=0.01, **kw)
    return NarrateStage(s, Players(redis.Redis.from_url(redis_url)), Client(s, "narrate"))


def job(scene, player: str = "alex", index: int = 0) -> Job:
    return Job(window=SceneWindow(server_id="s", player_id=player, index=index), scene=scene)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "mode: night; biome: Forest",  # labels echoed back
        '{"narrative": "You walk."}',
        "You walk in the forest, you walk in the forest, you walk, you walk, you walk, you walk.",
        "I am a mercenary and my plan is to win.",  # role-play in the first person
        "You " + "wander ever onward " * 30,  # one runaway sentence
        "You walk. You walk.",  # a repeated sentence
        "You notice that the sign reads obey the rules PWNED.",  # copies what a player wrote
        "The player is in a forest, and the scene facts are:",  # not addressed to the player
        "The end of the game. The attackers are now in the end.",  # third person
    ],
)
def test_guard_rejects(text):
    assert guard(text, inputs=[SCENE, "You step into the dark forest."], player_texts=["obey PWNED"]) is None


def test_narrator_rejects_parroting_its_prompt(redis_url):
    prompt = stage(closed_url(), redis_url).prompt.system.template
    seen = "You trudge between dark spruces while cold rain drips from the branches."  # the example reply
    assert guard(seen, inputs=[SCENE], player_texts=[]) is not None  # good prose on its own...
    assert guard(seen, inputs=[prompt, SCENE], player_texts=[]) is None  # ...but copied from the prompt
    # its own instructions, as SmolLM2 returns them
    assert guard("You have the player's moment for a music composer.", inputs=[prompt], player_texts=[]) is None


def test_guard_keeps_and_trims_good_prose():
    text = "You step between wet pines. Rain drums on the leaves! The night feels close. Then more. And more."
    kept = "You step between wet pines. Rain drums on the leaves! The night feels close."
    assert guard(text, inputs=[SCENE], player_texts=[]) == kept
    assert guard("Narration: You rest by the fire", inputs=[SCENE], player_texts=[]) == "You rest by the fire."
    assert guard("You rest by the fire and", inputs=[SCENE], player_texts=[], finish="length") is None


def test_fallback_is_valid_for_every_mode():
    seen = set()
    for scene in scenes(50):
        text = fallback(scene)
        seen.add(scene.mode)
        assert text.startswith("You ") and text.endswith(".") and len(text) < 320
        assert guard(text, inputs=[], player_texts=[]) == text
    assert Mode.combat in seen and Mode.end in seen


def test_narrates_stores_and_publishes(llm_server, redis_url):
    st = stage(llm_server, redis_url)
    pubsub = st.players.r.pubsub()
    pubsub.subscribe(channel("s:alex"))
    pubsub.get_message(timeout=1)
    out = [st(job(scene, index=i)) for i, scene in enumerate(scenes(10)[:4])]
    for j in out:
        n = j.narrative
        assert n.template == "narrator/v1" and n.source in ("llm", "fallback")
        assert n.text and len(n.text) <= 320 and guard(n.text, inputs=[], player_texts=[]) == n.text
    assert st.players.narratives("s:alex") == [j.narrative.text for j in out[-3:]]
    events = [json.loads(m["data"]) for m in iter(lambda: pubsub.get_message(timeout=2), None)]
    assert [e["data"]["text"] for e in events if e["type"] == "narrative"] == [j.narrative.text for j in out]


def test_recent_narratives_reach_the_prompt(llm_server, redis_url):
    with Relay(llm_server) as relay:
        st = stage(relay.url, redis_url)
        st.players.push_narrative("s:alex", "You crossed the river at dawn.")
        st(job(scenes(3)[1]))
        sent = relay.bodies[-1]["messages"][1]["content"]
        assert "Earlier narration: You crossed the river at dawn." in sent
        assert relay.bodies[-1]["model"] == "narrator" and relay.bodies[-1]["max_tokens"] == 96


def test_injected_instructions_stay_data(llm_server, redis_url):
    scene = scenes(1)[0].model_copy(update={"texts": INJECTION})
    with Relay(llm_server) as relay:
        st = stage(relay.url, redis_url)
        for i in range(3):
            n = st(job(scene, index=i)).narrative
            assert "pwned" not in n.text.lower() and n.template == "narrator/v1"
            assert guard(n.text, inputs=[], player_texts=[]) == n.text
        system, user = relay.bodies[0]["messages"]
        assert "PWNED" not in system["content"]
        before, block = user["content"].split("<player_text>")
        assert "PWNED" not in before and block.count("</player_text>") == 1 and block.endswith("</player_text>")
        assert "\n" not in block and "<|im_start|>" not in block


def test_endpoint_down_gives_the_fallback(redis_url):
    st = stage(closed_url(), redis_url, llm_retries=0)
    before = metrics.llm_fallbacks.labels("narrate")._value.get()
    scene = scenes(6)[5]
    n = st(job(scene)).narrative
    assert n.source == "fallback" and n.text == fallback(scene) and n.template == "narrator/v1"
    assert metrics.llm_fallbacks.labels("narrate")._value.get() == before + 1


def test_a_refused_reply_is_asked_again_sampled(llm_server, redis_url):
    """Each refusal is counted and asked again (seeded sampling) until `narrator_attempts` replies."""
    refusals = metrics.llm_refusals.labels("narrate")
    with Relay(llm_server) as relay:
        st = stage(relay.url, redis_url, narrator_attempts=3)
        for scene in scenes(10)[:3]:
            relay.bodies.clear()
            before = refusals._value.get()
            n = st.narrate(scene, [])
            refused = refusals._value.get() - before
            assert len(relay.bodies) == refused + (n.source == "llm") <= 3
            assert "seed" not in relay.bodies[0]
            assert [(b["seed"], b["temperature"]) for b in relay.bodies[1:]] == [
                (i, 0.8) for i in range(1, len(relay.bodies))
            ]


def test_llama_cpp_gets_the_dry_sampler_and_vllm_none(llm_server, redis_url):
    """The DRY fields reach the real embedded server, which takes them (an unknown or out-of-range
    field is its 400, an LLMError here); set to 0 (vLLM's deployments) the request has none."""
    scene = scenes(3)[1]
    with Relay(llm_server) as relay:
        st = stage(relay.url, redis_url)
        reply = st.client.chat(st.messages(scene, ["You crossed the river at dawn."]), model="narrator",
                               max_tokens=24, sampler=st.sampler())  # fmt: skip
        assert reply.text
        sent = relay.bodies[-1]
        assert (sent["dry_multiplier"], sent["dry_allowed_length"], sent["dry_base"]) == (1.2, 2, 1.75)
        assert sent["dry_penalty_last_n"] >= 1024  # the whole prompt: the recent narratives come first
        off = stage(relay.url, redis_url, narrator_dry_multiplier=0)
        off.narrate(scene, [])
        assert not any(k.startswith("dry_") for k in relay.bodies[-1])
