"""The lab's process groups for Ansible, from their one definition in loadlab/process_groups.py.

Ansible runs from the project's virtualenv, where `loadlab` is installed (editable: this checkout).
"""

from __future__ import annotations

from loadlab.process_groups import lab_process_groups, lab_process_patterns


class FilterModule:
    """loadlab_process_groups (the exporter role) and loadlab_process_patterns (the teardown)."""

    def filters(self) -> dict:
        return {
            "loadlab_process_groups": lab_process_groups,
            "loadlab_process_patterns": lab_process_patterns,
        }
