"""The GraphQL ``Mutation`` type: every action, each root field scoped (see
:mod:`gateway.scopes`). The fields live in one module per area."""

from __future__ import annotations

from strawberry.tools import merge_types

from gateway.mutations_admin import AdminMutation
from gateway.mutations_events import EventMutation
from gateway.mutations_segments import SegmentMutation
from gateway.mutations_wallet import WalletMutation

Mutation = merge_types("Mutation", (EventMutation, SegmentMutation, WalletMutation, AdminMutation))
