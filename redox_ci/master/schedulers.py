"""What starts a pipeline: new commits (poller, GitHub hook) and the force form.

Every force-form field is checked by a regular expression before anything runs, and
Buildbot refuses the form with the field's message when one does not match. Branch,
revision and attributes follow the rules of ``names.py``, the same the plan and the
command line apply; the patterns end in \\Z, not $, so a trailing newline is refused too.
"""

from __future__ import annotations

from buildbot.plugins import changes, schedulers, util
from buildbot.schedulers.forcesched import ValidationError

from .. import names
from ..config import Settings
from .github import OurRefs

PLAN_SCHEDULER = "commits"
FORCE_SCHEDULER = "force"
BRANCH_PATTERN = names.form_regex(names.BRANCH)
REVISION_PATTERN = names.form_regex(names.REVISION, optional=True)
ATTRS_PATTERN = names.form_regex(names.ATTR, optional=True, separated=True)
REASON_PATTERN = r"^[^\x00-\x1f\x7f]{0,200}\Z"


def poller(settings: Settings, workdir: str = "gitpoller-work"):
    return changes.GitPoller(repourl=settings.flake.repo, branches=list(settings.flake.branches),
                             pollInterval=settings.flake.poll_interval, pollAtLaunch=True,
                             workdir=workdir)


def commit_scheduler(settings: Settings, plan_builder: str):
    # The branches, and the tags of [flake].tags that the GitHub hook records as refs/tags/<tag>.
    return schedulers.SingleBranchScheduler(
        name=PLAN_SCHEDULER, builderNames=[plan_builder], treeStableTimer=None,
        change_filter=util.ChangeFilter(branch_fn=OurRefs.of(settings.flake).builds_branch))


class CheckedString(util.StringParameter):
    """A force-form field whose refusal says what is allowed, not the raw pattern."""

    def __init__(self, name: str, rule: str, **kwargs):
        self.rule = rule
        super().__init__(name=name, **kwargs)

    def getFromKwargs(self, kwargs):
        try:
            return super().getFromKwargs(kwargs)
        except ValidationError:
            raise ValidationError(f"{self.label}: refused; {self.rule}") from None


class RestrictedForceScheduler(schedulers.ForceScheduler):
    """A ForceScheduler that only ever forces its own builders.

    Buildbot 4.3 takes the ``builderid`` of a force call at its word, so a call to
    ``/forceschedulers/force`` could start any builder, a job builder with made-up
    properties included.
    """

    async def computeBuilderNames(self, builderNames=None, builderid=None):
        names = await super().computeBuilderNames(builderNames, builderid)
        return sorted(set(names).intersection(self.builderNames))


def force_scheduler(settings: Settings, builder: str, name: str = FORCE_SCHEDULER,
                    label: str = "Build a branch, a commit, or some attributes", with_systems: bool = True):
    systems = list(settings.flake.systems)
    system_param = [util.ChoiceStringParameter(name="systems", label="Systems", choices=systems, default=systems,
                                               multiple=True, strict=True)] if with_systems else []
    return RestrictedForceScheduler(
        name=name, buttonName="Force build", label=label,
        builderNames=[builder],
        codebases=[util.CodebaseParameter(
            codebase="",
            branch=CheckedString("branch", names.BRANCH_WORDS,
                                 label="Branch", default=settings.flake.branches[0], regex=BRANCH_PATTERN),
            revision=CheckedString("revision", f"{names.REVISION_WORDS}, or empty for the branch tip", default="",
                                   regex=REVISION_PATTERN,
                                   label=f"Revision ({names.REVISION_WORDS}; empty: the branch tip)"),
            repository=util.FixedParameter(name="repository", default=settings.flake.repo),
            project=util.FixedParameter(name="project", default=""),
        )],
        reason=CheckedString("reason", "one line of at most 200 characters", label="Reason",
                             default="forced from the web UI", size=40, regex=REASON_PATTERN),
        properties=[
            *system_param,
            CheckedString("attrs", f"{names.ATTR_WORDS} separated by spaces",
                          label="Attributes (space separated; empty: all)", default="", size=60,
                          regex=ATTRS_PATTERN),
        ])


def triggerable(name: str, builder: str):
    return schedulers.Triggerable(name=name, builderNames=[builder])
