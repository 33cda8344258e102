"""The portal's models, one module per aggregate."""

from portal.models.access_review import AccessReviewCampaign, AccessReviewItem
from portal.models.approval import Approval
from portal.models.backup import Backup, BackupPolicy, RestoreDrill, TeamCheck
from portal.models.breakglass import BreakGlass, BreakGlassSetting
from portal.models.change_set import ChangeSet, ChangeSetItem
from portal.models.identity import GroupMapping, IdentityLink
from portal.models.instance import Instance, InstanceInventory
from portal.models.managed import Grant, ManagedRole, ManagedSchema
from portal.models.monitoring import Alert, AlertThreshold, DictionarySnapshot, MonitoringSample
from portal.models.policy import ApprovalPolicy, DdlRuleSetting
from portal.models.request import (
    ChangeRequest,
    Execution,
    RequestCount,
    RequestCountDelta,
    RequestMedianDay,
    TeamRequestCount,
)
from portal.models.reservation import NameReservation
from portal.models.team import Membership, Team
from portal.models.token import ApiToken

__all__ = [
    "ApiToken",
    "AccessReviewCampaign",
    "AccessReviewItem",
    "Alert",
    "AlertThreshold",
    "Approval",
    "Backup",
    "BackupPolicy",
    "ApprovalPolicy",
    "BreakGlass",
    "BreakGlassSetting",
    "ChangeRequest",
    "ChangeSet",
    "ChangeSetItem",
    "DdlRuleSetting",
    "DictionarySnapshot",
    "Execution",
    "GroupMapping",
    "IdentityLink",
    "Grant",
    "Instance",
    "InstanceInventory",
    "ManagedRole",
    "ManagedSchema",
    "RestoreDrill",
    "MonitoringSample",
    "Membership",
    "NameReservation",
    "RequestCount",
    "RequestCountDelta",
    "RequestMedianDay",
    "Team",
    "TeamRequestCount",
    "TeamCheck",
]
