"""Chat messages (transformers / OpenAI format) in, an assistant message out: pipe(messages), pipe.chat(...)."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from anygen import AnyToAnyPipeline
from anygen.media import Audio
from anygen.messages import MessageError, parse_messages
from anygen.prompt import Turn, conversation_segments
from anygen.spec import TemplateSpec
from anygen.world import language as L
from anygen.world.render import render_audio, render_image


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _wav(audio: Audio, tmp_path) -> bytes:
    return audio.save(tmp_path / "in.wav").read_bytes()


def _user(*parts):
    return [{"role": "user", "content": list(parts)}]


def _text(text):
    return {"type": "text", "text": text}


@pytest.fixture(scope="module")
def picture():
    return render_image("blue", "triangle", "left")


def test_messages_give_the_same_answer_as_a_prompt_with_inputs(tiny_pipe, picture):
    kw = dict(seed=3, max_new_tokens=6, output_modalities=("image",))
    plain = tiny_pipe("<image> what is this?", images=[picture], **kw)
    asked = tiny_pipe(_user({"type": "image", "image": picture}, _text("what is this?")), **kw)
    assert asked.text == plain.text and asked.token_ids == plain.token_ids
    np.testing.assert_array_equal(np.asarray(asked.images[0]), np.asarray(plain.images[0]))


def test_every_way_of_giving_an_image_is_the_same_input(tiny_pipe, picture, tmp_path):
    data = _png(picture)
    path = tmp_path / "in.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    parts = [
        {"type": "image", "image": picture},
        {"type": "image", "image": str(path)},
        {"type": "image", "path": str(path)},
        {"type": "image", "url": path.as_uri()},
        {"type": "image", "image": data},
        {"type": "image", "base64": b64},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
        {"type": "image_url", "image_url": f"data:image/png;base64,{b64}"},
    ]
    answers = {
        tiny_pipe(_user(p, _text("describe")), seed=0, max_new_tokens=8).token_ids.__repr__() for p in parts
    }
    assert len(answers) == 1


def test_media_stand_where_their_part_is(tiny_pipe, picture):
    before = parse_messages(_user({"type": "image", "image": picture}, _text("what is this?")))
    after = parse_messages(_user(_text("what is this?"), {"type": "image", "image": picture}))
    assert before.prompt == "<image> what is this?" and after.prompt == "what is this? <image>"
    kw = dict(seed=0, max_new_tokens=8)
    after_out = tiny_pipe(_user(_text("what is this?"), {"type": "image", "image": picture}), **kw)
    assert after_out.token_ids == tiny_pipe("what is this? <image>", images=[picture], **kw).token_ids


def test_audio_parts_openai_and_transformers_style(tiny_pipe, tmp_path):
    wav = _wav(render_audio("high", "beeping"), tmp_path)
    b64 = base64.b64encode(wav).decode()
    kw = dict(seed=0, max_new_tokens=8)
    a = tiny_pipe(
        _user({"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}}, _text("hm?")), **kw
    )
    b = tiny_pipe(_user({"type": "audio", "audio": wav}, _text("hm?")), **kw)
    c = tiny_pipe("<audio> hm?", audios=[wav], **kw)
    assert a.token_ids == b.token_ids == c.token_ids


def test_history_and_system_message_reach_the_prompt(tiny_pipe, picture):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "image", "image": picture}, _text("what is this?")]},
        {"role": "assistant", "content": "A shape."},
        {"role": "user", "content": "and its colour?"},
    ]
    parsed = parse_messages(messages)
    assert parsed.prompt == "and its colour?"
    assert [t.role for t in parsed.history] == ["system", "user", "assistant"]
    assert len(parsed.history[1].media["image"]) == 1
    kw = dict(seed=0, max_new_tokens=8)
    got = tiny_pipe(messages, **kw)
    same = tiny_pipe("and its colour?", history=parsed.history, **kw)
    assert got.token_ids == same.token_ids
    template = tiny_pipe.spec.llm.template
    segments = [
        seg for seg, _ in conversation_segments([*parsed.history, Turn("user", parsed.prompt)], template)
    ]
    assert segments[0] == "You are terse.\n"  # the default system_turn, "{content}\n"
    assert "A shape." in segments and segments[-2] == "and its colour?"


def test_system_turn_follows_the_template():
    template = TemplateSpec(system="DEFAULT\n", system_turn="<<SYS>>{content}<</SYS>>\n")
    turns = [Turn("system", "be brief"), Turn("user", "hi")]
    segments = [s for s, _ in conversation_segments(turns, template)]
    assert segments[0] == "<<SYS>>be brief<</SYS>>\n" and "DEFAULT\n" not in segments
    assert [s for s, _ in conversation_segments(turns[1:], template)][0] == "DEFAULT\n"
    with pytest.raises(ValueError, match="system_turn"):
        TemplateSpec(system_turn="no placeholder")


def test_a_template_without_system_turns_refuses_a_system_message(picture):
    spec = AnyToAnyPipeline.from_pretrained("tiny").spec
    data = spec.model_dump(mode="json", exclude={"root"})
    data["llm"]["template"]["system_turn"] = None
    pipe = AnyToAnyPipeline(type(spec).from_dict(data, root=spec.root))
    with pytest.raises(MessageError, match=r"messages\[0\].*system_turn is null"):
        pipe([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}], max_new_tokens=2)


def test_the_answer_reads_back_as_a_message_and_the_conversation_goes_on(tiny_pipe):
    first = [{"role": "user", "content": "a red circle"}]
    out = tiny_pipe(first, seed=0, max_new_tokens=6, output_modalities=("image", "audio"))
    message = out.to_message()
    assert message["role"] == "assistant"
    assert message["content"][0] == {"type": "text", "text": out.text}
    kinds = [p["type"] for p in message["content"][1:]]
    assert kinds.count("image") == len(out.images) >= 1 and kinds.count("audio") == len(out.audios) >= 1
    assert message["content"][1]["image"] is out.images[0]

    chat = tiny_pipe.chat(messages=[*first, message], seed=0, max_new_tokens=6)
    reply = chat.send([_text("again")])
    direct = tiny_pipe(
        [*first, message, {"role": "user", "content": [_text("again")]}], seed=0, max_new_tokens=6
    )
    assert reply.token_ids == direct.token_ids
    back = chat.messages
    assert [m["role"] for m in back] == ["user", "assistant", "user", "assistant"]
    assert back[1] == message  # the earlier answer keeps its media
    assert back[3]["content"][0]["text"] == reply.text


def test_conversation_messages_keep_user_media_in_place(tiny_pipe, picture):
    chat = tiny_pipe.chat(seed=0, max_new_tokens=4)
    chat.send(
        {"role": "user", "content": [_text("look:"), {"type": "image", "image": picture}, _text("ok?")]}
    )
    user = chat.messages[0]
    assert [p["type"] for p in user["content"]] == ["text", "image", "text"]
    assert user["content"][0]["text"] == "look:" and user["content"][2]["text"] == "ok?"


@pytest.mark.parametrize(
    "messages, match",
    [
        (
            [{"role": "user", "content": 5}],
            r"messages\[0\]\.content: expected a string or a list of parts, got int",
        ),
        (
            [{"role": "robot", "content": "hi"}],
            r"messages\[0\]\.role: expected one of system, user, assistant",
        ),
        ([{"role": "user"}], r"messages\[0\]: no 'content'"),
        ([{"role": "user", "content": "hi", "extra": 1}], r"messages\[0\]: unknown field\(s\) extra"),
        (
            [{"role": "user", "content": [{"type": "gif", "gif": "x"}]}],
            r"messages\[0\]\.content\[0\]\.type: unknown",
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            r"messages\[0\]\.content\[0\]\.text: expected a string",
        ),
        (
            [{"role": "user", "content": [{"type": "image"}]}],
            r"content\[0\]: a image part needs exactly one of",
        ),
        (
            [{"role": "user", "content": [{"type": "image", "base64": "!!"}]}],
            r"content\[0\]\.base64: not valid",
        ),
        (
            [{"role": "user", "content": [{"type": "image", "image": "/no/such.png"}]}],
            r"content\[0\]: no such file",
        ),
        ([{"role": "user", "content": "<image> what?"}], r"messages\[0\]\.content: holds a <image> tag"),
        ([{"role": "assistant", "content": "hi"}], r"messages\[0\]: the last message is the assistant's"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
            r"messages\[1\]: a system message",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:text/plain;base64,aGk="}}],
                }
            ],
            r"content\[0\]: a data: URL of type 'text/plain' given for a image part",
        ),
        (
            [{"role": "user", "content": [{"type": "image", "image": "ftp://x/y.png"}]}],
            r"content\[0\]: unsupported URL scheme 'ftp'",
        ),
        (
            [{"role": "user", "content": [_text("hi"), {"type": "image", "image": b"not an image"}]}],
            r"messages\[0\]\.content\[1\]",
        ),
    ],
)
def test_bad_messages_are_named(tiny_pipe, messages, match):
    with pytest.raises(MessageError, match=match):
        tiny_pipe(messages, max_new_tokens=2)


def test_http_urls_are_refused_offline_before_any_network(tiny_pipe, monkeypatch):
    import urllib.request

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("the network was used"))
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(
        MessageError,
        match=r"messages\[0\]\.content\[0\]: 'https://example.com/cat.png' is a https URL, but anygen is offline",
    ):
        tiny_pipe(_user(part), max_new_tokens=2)


def test_an_empty_list_is_not_a_conversation():
    with pytest.raises(MessageError, match="messages: expected a non-empty list"):
        parse_messages([])


def test_a_server_can_refuse_local_paths(picture, tmp_path):
    path = tmp_path / "x.png"
    picture.save(path)
    with pytest.raises(MessageError, match="local paths are not accepted here"):
        parse_messages(_user({"type": "image", "image": str(path)}), allow_files=False)


def test_inputs_beside_messages_are_refused(tiny_pipe, picture):
    with pytest.raises(MessageError, match="images: with chat messages"):
        tiny_pipe([{"role": "user", "content": "hi"}], images=[picture])


def test_mini_answers_an_image_sent_as_a_data_url():
    """The trained default reads the image given in OpenAI's image_url form (a meaningful answer, judged)."""
    pipe = AnyToAnyPipeline.from_pretrained("mini")
    pipe.set_progress_bar_config(disable=True)
    url = "data:image/png;base64," + base64.b64encode(_png(render_image("green", "square", "right"))).decode()
    out = pipe(
        _user({"type": "image_url", "image_url": {"url": url}}, _text("what is in this image?")), seed=0
    )
    assert L.parse_attributes(out.text) == {"colour": "green", "shape": "square", "position": "right"}, (
        out.text
    )
    assert not out.images  # a question about an image makes no media


def test_send_keeps_its_text_keyword(tiny_pipe):
    """``send(text=...)`` (the demo's call) and ``send(message_dict)`` answer alike."""
    kw = dict(seed=0, max_new_tokens=4)
    by_keyword = tiny_pipe.chat(**kw).send(text="hi")
    by_message = tiny_pipe.chat(**kw).send({"role": "user", "content": "hi"})
    assert by_keyword.token_ids == by_message.token_ids


def test_keep_sources_checks_every_input_but_keeps_its_bytes(tiny_pipe, picture):
    png = _png(picture)
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    messages = [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, _text("what?")]},
        {"role": "assistant", "content": "A shape."},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, _text("and now?")]},
    ]
    kept = parse_messages(messages, keep_sources=True, allow_files=False)
    assert kept.images == [png] and kept.history[0].media["image"] == [png]  # the file's bytes, not pixels
    broken = "data:image/png;base64," + base64.b64encode(b"not a png").decode()
    with pytest.raises(MessageError, match=r"messages\[0\]\.content\[0\]"):
        parse_messages(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": broken}}]}],
            keep_sources=True,
        )
    # A history holding bytes (or paths) answers as one holding the decoded image.
    decoded = parse_messages(messages)
    kw = dict(seed=0, max_new_tokens=6)
    from_bytes = tiny_pipe(kept.prompt, images=kept.images, history=kept.history, **kw)
    from_pixels = tiny_pipe(decoded.prompt, images=decoded.images, history=decoded.history, **kw)
    assert from_bytes.token_ids == from_pixels.token_ids
