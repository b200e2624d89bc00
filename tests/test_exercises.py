"""helpers.exercises and the exercises in the notebooks: every solution passes its own strict check, every
planted classic mistake is caught, a stub is "not attempted yet" without raising, solutions are hidden."""
import json
import math
import re

import numpy as np
import pytest
import torch

from helpers import autodiff, env, exercises, models, toys
from helpers import export as export_package

NOTEBOOKS = sorted((env.REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHECK_CALL = re.compile(r'exercises\.check\(\s*"(?P<id>[^"]+)"\s*,\s*(?P<name>\w+)\s*'
                        r'(?P<strict>,\s*strict\s*=\s*True)?\s*\)')


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _source(cell):
    return "".join(cell["source"])


def _exercise_cells():
    """{exercise id: {"notebook", "stub", "check", "solution"}}, each a cell; the stub is the code cell just
    before the check cell. Raises if an id is checked twice in the same role."""
    found = {}
    for path in NOTEBOOKS:
        cells = _cells(path)
        code_indices = [index for index, cell in enumerate(cells) if cell["cell_type"] == "code"]
        for index in code_indices:
            for match in CHECK_CALL.finditer(_source(cells[index])):
                entry = found.setdefault(match["id"], {"notebook": path.name, "name": match["name"]})
                role = "solution" if match["strict"] else "check"
                assert role not in entry, f"{match['id']} has two {role} cells"
                entry[role] = cells[index]
                if role == "check":
                    before = [i for i in code_indices if i < index]
                    entry["stub"] = cells[before[-1]]
    return found


IN_NOTEBOOKS = _exercise_cells()


def _namespace():
    """What a notebook's exercise cells may use: the chapters' usual imports."""
    return {"exercises": exercises, "torch": torch, "math": math, "np": np}


def test_every_exercise_used_in_a_notebook_is_registered_and_every_registered_one_is_used():
    assert set(IN_NOTEBOOKS) <= set(exercises.EXERCISES), set(IN_NOTEBOOKS) - set(exercises.EXERCISES)
    assert set(exercises.EXERCISES) <= set(IN_NOTEBOOKS), set(exercises.EXERCISES) - set(IN_NOTEBOOKS)


@pytest.mark.parametrize("exercise_id", sorted(IN_NOTEBOOKS))
def test_each_exercise_has_a_stub_a_check_and_a_hidden_solution_in_its_own_chapter(exercise_id):
    entry = IN_NOTEBOOKS[exercise_id]
    assert {"stub", "check", "solution"} <= set(entry), f"{exercise_id}: missing {set(entry)}"
    assert entry["notebook"].startswith(exercise_id.split(".")[0] + "_")     # 01.x lives in chapter 01
    cells = _cells(env.REPO_ROOT / "notebooks" / entry["notebook"])
    stub, check, solution = (cells.index(entry[role]) for role in ("stub", "check", "solution"))
    assert stub < check < solution
    stub_source = _source(entry["stub"])
    assert f"def {entry['name']}(" in stub_source and "raise NotImplementedError(" in stub_source
    solution_cell = entry["solution"]
    assert _source(solution_cell).splitlines()[0] == exercises.SOLUTION_TITLE          # Colab's form title
    assert solution_cell["metadata"].get("cellView") == "form"                          # Colab hides the code
    assert solution_cell["metadata"].get("jupyter", {}).get("source_hidden") is True    # JupyterLab, Notebook 7


@pytest.mark.parametrize("exercise_id", sorted(IN_NOTEBOOKS))
def test_the_notebooks_solution_passes_its_strict_check(exercise_id, capsys):
    entry = IN_NOTEBOOKS[exercise_id]
    namespace = _namespace()
    exec(compile(_source(entry["solution"]), f"{exercise_id} solution", "exec"), namespace)
    assert f"✅ {exercise_id}: done" in capsys.readouterr().out
    assert exercises.evaluate(exercise_id, namespace[entry["name"]]).status == "done"


@pytest.mark.parametrize("exercise_id", sorted(IN_NOTEBOOKS))
def test_the_notebooks_stub_is_not_attempted_yet_and_its_check_cell_does_not_raise(exercise_id, capsys):
    entry = IN_NOTEBOOKS[exercise_id]
    namespace = _namespace()
    exec(compile(_source(entry["stub"]), f"{exercise_id} stub", "exec"), namespace)
    exec(compile(_source(entry["check"]), f"{exercise_id} check", "exec"), namespace)     # must not raise
    printed = capsys.readouterr().out
    assert f"{exercise_id}: not attempted yet" in printed and exercises.get(exercise_id).task in printed
    with pytest.raises(AssertionError, match="does not pass its own check"):
        exercises.check(exercise_id, namespace[entry["name"]], strict=True)


MISTAKES = [(exercise_id, name) for exercise_id, exercise in exercises.EXERCISES.items() for name in exercise.mistakes]


def test_every_exercise_plants_at_least_two_classic_mistakes():
    for exercise_id, exercise in exercises.EXERCISES.items():
        assert len(exercise.mistakes) >= 2, exercise_id


@pytest.mark.parametrize("exercise_id, mistake", MISTAKES, ids=[f"{i}: {m}" for i, m in MISTAKES])
def test_every_planted_mistake_is_caught_with_the_input_what_differs_and_the_hint(exercise_id, mistake, capsys):
    exercise = exercises.get(exercise_id)
    verdict = exercises.evaluate(exercise_id, exercise.mistakes[mistake])
    assert verdict.status == "wrong", verdict.message
    for part in ("call:", "expected:", "got:", "what differs:", exercise.hint):
        assert part in verdict.message
    exercises.check(exercise_id, exercise.mistakes[mistake])                   # prints, never raises
    assert "not right yet" in capsys.readouterr().out
    with pytest.raises(AssertionError):
        exercises.check(exercise_id, exercise.mistakes[mistake], strict=True)


@pytest.mark.parametrize("exercise_id", sorted(exercises.EXERCISES))
def test_the_reference_passes_and_the_cases_include_edge_cases(exercise_id):
    exercise = exercises.get(exercise_id)
    assert exercises.evaluate(exercise_id, exercise.reference).status == "done"
    cases = exercise.cases(torch.Generator().manual_seed(0))
    assert sum(case.label == "random input" for case in cases) >= 3 and any(c.label != "random input" for c in cases)
    assert len(exercise.task.splitlines()) == 1


def test_an_exception_in_the_learners_code_is_a_wrong_answer_with_its_message():
    def broken(x, y, upstream):
        return x / 0

    verdict = exercises.evaluate("01.div_backward", broken)
    assert verdict.status == "wrong"
    assert "ZeroDivisionError" in verdict.message and "division by zero" in verdict.message


def test_a_missing_return_a_wrong_shape_and_a_non_function_are_explained():
    assert "forget to `return`" in exercises.evaluate("02.damped_step", lambda j, r, d: None).message
    wrong_shape = exercises.evaluate("02.damped_step", lambda j, r, d: torch.zeros(2, dtype=j.dtype))
    assert wrong_shape.status == "wrong" and "shape (2,)" in wrong_shape.message
    not_a_function = exercises.evaluate("04.quantize_state", 3.0)
    assert not_a_function.status == "wrong" and "expected a function" in not_a_function.message


def test_the_learners_function_cannot_change_the_inputs_of_the_next_call():
    def changes_its_input(state):
        state.zero_()
        return exercises.quantize_state_reference(state)

    assert exercises.evaluate("04.quantize_state", changes_its_input).status == "wrong"
    calls = []

    def records(state):
        calls.append(state.clone())
        return exercises.quantize_state_reference(state)

    assert exercises.evaluate("04.quantize_state", records).status == "done" and len(calls) >= 6


def test_an_unknown_exercise_is_a_clear_error():
    with pytest.raises(ValueError, match="no exercise '01.nope'.*01.div_backward"):
        exercises.check("01.nope", print)


# ------------------------------------------------------- the references agree with the rest of helpers

def test_the_autodiff_references_agree_with_autograd_and_helpers_autodiff():
    x = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    grads = torch.autograd.grad(x / y * 2.5, (x, y))
    assert np.allclose(exercises.div_backward_reference(1.3, -0.7, 2.5), [g.item() for g in grads])
    for u, du, v, dv in [(1.7, 0.3, -0.4, 1.1), (0.5, -1.0, 2.0, 0.0)]:
        ours = (autodiff.Dual(v, dv) * autodiff.Dual(u, du).log()).exp()      # u ** v = exp(v log u)
        assert np.allclose(exercises.dual_pow_reference(u, du, v, dv), (ours.value, ours.tangent), rtol=1e-12)
    x, weight = torch.randn(6, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    bias, upstream = torch.randn(3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    _, cache = autodiff.dense_forward(x, weight, bias, "relu")
    _, grad_weight, _ = autodiff.dense_backward(upstream, cache)
    assert torch.allclose(exercises.relu_weight_gradient_reference(x, cache[2], upstream), grad_weight)


def test_the_damped_step_reference_is_the_toys_solver_step():
    angles = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1.0, 2.0], dtype=torch.float64)

    def tip(a):
        return toys.chain_points(a, 1.0, heading=math.pi / 2)[-1]

    point = tip(angles)
    jacobian = toys.point_jacobian(point, angles)
    expected = toys.damped_step(tip, angles, target, damping=0.3)
    assert torch.allclose(exercises.damped_step_reference(jacobian, (point - target).detach(), 0.3), expected)


def test_the_quantization_references_are_the_exporters():
    model = models.load(models.shipped_dir() / "texture_stripes.pt")        # the model chapter 04 exports
    rule = export_package.quantize(model, bits=8)
    weights = model.update.weight.detach().double().reshape(12, 48)
    codes, scale = exercises.quantize_weights_reference(weights, 8)
    assert np.array_equal(codes.numpy().astype(int), rule.weight_codes) and math.isclose(scale, rule.weight_scale,
                                                                                         rel_tol=1e-6)
    state = torch.randn(1, 12, 5, 7, generator=torch.Generator().manual_seed(0))
    pixels = export_package.to_framebuffer(state)
    for x, y, channel in [(0, 0, 0), (6, 4, 11), (3, 2, 5), (1, 3, 8)]:
        column, row, component = exercises.framebuffer_pixel_reference(x, y, channel, width=7)
        assert pixels[row, column, component] == state[0, channel, y, x]
